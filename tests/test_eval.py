"""`vbg eval` runs the live matte path over clips with ground truth and scores it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import person_frame, reference_matte
from vbg.cli import main


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, default_model_path):
    """Two 4-frame clips whose ground truth is MODNet's own matte (so a raw run scores ~0),
    the second with the truth inverted (so it scores badly)."""
    root = tmp_path_factory.mktemp("clips")
    for clip, invert in (("a_right", False), ("b_inverted", True)):
        (root / clip / "com").mkdir(parents=True)
        (root / clip / "pha").mkdir()
        for i in range(4):
            frame = person_frame(i)
            truth = reference_matte(default_model_path, frame)
            truth = 1 - truth if invert else truth
            cv2.imwrite(str(root / clip / "com" / f"{i:04d}.png"), frame)
            cv2.imwrite(str(root / clip / "pha" / f"{i:04d}.png"), np.round(truth * 255).astype(np.uint8))
    return root


def run_eval(capsys, argv):
    assert main(["eval", *argv]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return out, json.loads(out[-1])


def test_eval_scores_each_clip_and_ends_with_json(capsys, clip_dir):
    lines, result = run_eval(capsys, [str(clip_dir), "--smoothing", "0", "--json"])
    assert {"mad", "mse", "grad", "conn", "dtssd", "ms_per_frame", "frames"} <= set(result)
    assert result["frames"] == 8
    table = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert float(table["a_right"][2]) < 2.0  # the matte path reproduces the reference matte
    assert float(table["b_inverted"][2]) > 500  # and an inverted truth is caught
    assert result["ms_per_frame"] > 0


def test_one_clip_folder_and_smoothing_change_the_result(capsys, clip_dir):
    _, raw = run_eval(capsys, [str(clip_dir / "a_right"), "--smoothing", "0", "--json"])
    _, smoothed = run_eval(capsys, [str(clip_dir / "a_right"), "--smoothing", "1", "--json"])
    assert raw["frames"] == smoothed["frames"] == 4
    assert raw["mad"] != smoothed["mad"]


def test_a_folder_without_clips_is_a_clear_error(capsys, tmp_path):
    assert main(["eval", str(tmp_path)]) == 1
    assert "holds no clips" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["selfie-landscape", "modnet"])  # the default hybrid's two parts
def test_flicker_figure_without_ground_truth_drops_with_smoothing(capsys, person_video, model):
    _, raw = run_eval(capsys, ["--flicker", str(person_video), "--model", model, "--smoothing", "0", "--json"])
    _, smoothed = run_eval(capsys, ["--flicker", str(person_video), "--model", model, "--smoothing", "1", "--json"])
    assert raw["flicker"] > 0
    assert smoothed["flicker"] < raw["flicker"]


def test_eval_needs_clips_or_videos(capsys):
    assert main(["eval"]) == 2
    assert "give DIR" in capsys.readouterr().err
