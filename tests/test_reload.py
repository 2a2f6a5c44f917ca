"""Hot reload against a real pipeline: whatever an edit of the --config file holds, the watcher
keeps watching and the next good edit applies."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from vbg.config import Settings
from vbg.pipeline import build
from vbg.reload import ConfigWatcher


@pytest.fixture
def pipeline(background_image):
    """A real pipeline (model, background, null output), not running: the watcher only applies."""
    built = build(Settings(input=str(background_image), output="null", model="selfie-landscape",
                           mode="blur", blur=60.0))
    yield built
    built.close()


def replace(path: Path, text: str) -> None:
    """An editor's save: the new file takes the old one's place at once."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def wait_for_blur(pipeline, blur: float, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while pipeline.settings.blur != blur and time.monotonic() < deadline:
        time.sleep(0.05)
    return pipeline.settings.blur == blur


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def undo(path: Path) -> None:
    """Put a regular file back where a bad edit left something else."""
    if path.is_dir():
        path.rmdir()
    elif path.exists() and not path.is_file():
        path.unlink()


# Each bad edit, what the watcher says about it, and the good edit after it.
BAD_EDITS = {
    "a FIFO in place of the file": (fifo, "is a FIFO (named pipe), not a regular file", 'blur = 44.0\n'),
    "a folder in place of the file": (folder, "is a folder", 'blur = 44.0\n'),
    "not TOML": (lambda p: replace(p, "blur = = 3\n"), "is not valid TOML", 'blur = 44.0\n'),
    "a bad value": (lambda p: replace(p, 'mode = "sepia"\n'), "mode", 'blur = 44.0\n'),
    # The bad background stays in the file while blur is edited: blur must still apply.
    "a background outside its folder that stays in the file": (
        lambda p: replace(p, 'mode = "image"\nbackground = "../elsewhere/beach.jpg"\n'), "does not exist",
        'mode = "image"\nbackground = "../elsewhere/beach.jpg"\nblur = 44.0\n'),
}


@pytest.mark.parametrize("bad", BAD_EDITS)
def test_any_bad_edit_leaves_the_watcher_applying_the_next_good_one(pipeline, tmp_path, caplog, bad):
    caplog.set_level(logging.INFO, logger="vbg")
    config = tmp_path / "configs" / "live.toml"
    config.parent.mkdir()
    config.write_text('mode = "blur"\nblur = 60.0\n')
    make_bad, said, good = BAD_EDITS[bad]
    watcher = ConfigWatcher(config, pipeline).start()
    try:
        time.sleep(0.3)
        make_bad(config)
        deadline = time.monotonic() + 3
        while said not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said in caplog.text
        assert pipeline.settings.blur == 60.0 and pipeline.settings.mode == "blur"  # the last good settings
        undo(config)
        replace(config, good)
        assert wait_for_blur(pipeline, 44.0), caplog.text
        assert watcher._thread.is_alive()
    finally:
        undo(config)
        watcher.close()
    assert not watcher._thread.is_alive()  # never stuck, e.g. in the open() of a FIFO


def test_the_watcher_survives_any_exception_and_says_so(pipeline, tmp_path, caplog, monkeypatch):
    config = tmp_path / "live.toml"
    config.write_text("blur = 60.0\n")
    real_apply = pipeline.apply
    calls = []

    def apply_failing_once(**changes):
        calls.append(changes)
        if len(calls) == 1:
            raise RuntimeError("a bug in applying")
        return real_apply(**changes)

    monkeypatch.setattr(pipeline, "apply", apply_failing_once)
    watcher = ConfigWatcher(config, pipeline).start()
    try:
        time.sleep(0.3)
        replace(config, "blur = 30.0\n")
        deadline = time.monotonic() + 3
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert "applying it failed (RuntimeError: a bug in applying)" in caplog.text
        assert "still watching" in caplog.text and "Traceback" not in caplog.text
        replace(config, "blur = 44.0\n")
        assert wait_for_blur(pipeline, 44.0)
    finally:
        watcher.close()
