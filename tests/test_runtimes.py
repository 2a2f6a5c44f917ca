"""The runtimes (onnxruntime, OpenVINO) and the trial that picks one: its choice, its cache, its
fallbacks, and OpenVINO's mattes against onnxruntime's on real frames."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import person_frame
from vbg import registry, runtimes, tuning
from vbg.errors import VbgError
from vbg.inference import EVERY_FRAME_MS, open_session
from vbg.runtimes import CPU, IGPU, ONNXRUNTIME_CPU, OPENVINO, Backend
from vbg.session import MattingSession
from vbg.tuning import TOLERANCE, Trial, Tuning

OV_CPU_F32, OV_CPU_BF16, OV_IGPU = Backend(OPENVINO, CPU, "f32"), Backend(OPENVINO, CPU, "bf16"), Backend(OPENVINO, IGPU, "f16")
needs_openvino = pytest.mark.skipif(runtimes.openvino_version() is None,
                                    reason="OpenVINO is not installed (pip install openvino)")


@pytest.fixture(autouse=True)
def _the_trial_chooses(monkeypatch):
    monkeypatch.delenv(tuning.RUNTIME_ENV, raising=False)  # conftest pins onnxruntime for the other tests


def trials(*rows: tuple[str, Backend, float | None, float | None]) -> Tuning:
    return Tuning("modnet", (256, 448), 1, [Trial(m, b, ms, err, "" if ms else "failed") for m, b, ms, err in rows])


def test_the_fastest_backend_within_tolerance_of_fp32_is_chosen():
    result = trials(("modnet", ONNXRUNTIME_CPU, 250.0, 0.0),
                    ("modnet", OV_CPU_BF16, 50.0, 0.003),
                    ("modnet-int8", OV_CPU_F32, 20.0, TOLERANCE * 2),  # faster, but its alpha strays: never chosen
                    ("modnet-int8", OV_IGPU, None, None),  # could not run
                    ("modnet-int8", ONNXRUNTIME_CPU, 120.0, 0.005))
    assert result.best() == result.trials[1]
    assert result.best(models=("modnet-int8",)) == result.trials[4]  # --model modnet-int8: its own file only
    assert result.best(devices=(IGPU,)) is None  # --device igpu where the GPU failed
    assert result.baseline().model == registry.modnet_for_this_cpu()[0]  # what ran before trials existed
    line = result.describe(result.trials[1])
    assert "modnet on openvino cpu bf16: 50 ms" in line and "448x256" in line and "0.0030" in line


def test_the_trial_is_cached_and_made_again_when_the_cpu_or_a_runtime_changes(monkeypatch, tmp_path):
    monkeypatch.setenv("VBG_CACHE_DIR", str(tmp_path))
    measured = []

    def fake_measure(family, shape, threads, why=""):
        result = Tuning(family, shape, threads, [Trial("modnet", ONNXRUNTIME_CPU, 100.0, 0.0)],
                        tuning._made_with(tuning.family_files(family), shape, threads))
        tuning._store(result)
        measured.append(result)
        return result

    monkeypatch.setattr(tuning, "measure", fake_measure)
    tuning.tuned("modnet", (256, 448), 1)
    tuning.tuned("modnet", (256, 448), 1)
    assert len(measured) == 1 and (tmp_path / tuning.CACHE_FILE).is_file()  # measured once, then read
    tuning.tuned("modnet", (256, 448), 2)
    assert len(measured) == 2  # other threads: another trial
    other_cpu = tuning.cpu_flags() ^ {"amx_int8"}  # with AMX where this one has none, or without it
    monkeypatch.setattr(tuning, "cpu_flags", lambda: other_cpu)
    tuning.tuned("modnet", (256, 448), 1)
    assert len(measured) == 3
    monkeypatch.setattr(tuning, "openvino_version", lambda: "2099.1")  # a runtime upgraded
    tuning.tuned("modnet", (256, 448), 1)
    tuning.tuned("modnet", (256, 448), 1)
    assert len(measured) == 4


def test_vbg_runtime_onnxruntime_skips_the_trial(monkeypatch):
    monkeypatch.setenv(tuning.RUNTIME_ENV, "onnxruntime")
    monkeypatch.setattr(tuning, "tuned", lambda *args: pytest.fail("a trial ran"))
    assert tuning.choose(registry.get_spec("modnet"), "auto") == (registry.get_spec("modnet"), ONNXRUNTIME_CPU, None)


@pytest.mark.parametrize("ms, every_frame", [(EVERY_FRAME_MS / 2, True), (EVERY_FRAME_MS * 4, False)])
def test_a_detail_model_fast_enough_for_every_frame_mattes_alone(monkeypatch, ms, every_frame):
    """The hybrid's MODNet mattes every frame itself where the trial measured it fast enough;
    else the hybrid runs the file and backend the trial chose as its detail model."""
    from vbg.hybrid import HybridSession

    chosen = trials(("modnet-int8", ONNXRUNTIME_CPU, ms, 0.005), ("modnet", ONNXRUNTIME_CPU, ms * 3, 0.0))
    monkeypatch.setattr(tuning, "tuned", lambda *args: chosen)
    session = open_session(registry.get_spec("hybrid"))
    detail = session if every_frame else session.detail
    assert isinstance(session, MattingSession if every_frame else HybridSession)
    assert session.every_frame and detail.spec.name == "modnet-int8"
    session.close()


def test_without_openvino_only_onnxruntime_runs_and_one_line_says_why(monkeypatch, caplog):
    monkeypatch.setattr(runtimes, "_openvino", lambda: (None, "OpenVINO is not installed (`pip install openvino` adds it)"))
    assert runtimes.available_backends() == [ONNXRUNTIME_CPU]
    assert "not installed" in runtimes.offered()[OPENVINO]
    with pytest.raises(VbgError, match=r"--device igpu: no GPU here runs modnet \(OpenVINO is not installed"):
        tuning.choose(registry.get_spec("modnet"), IGPU)
    caplog.clear()  # choose() above may have run a trial of its own (no cached one in a new cache)
    with caplog.at_level(logging.INFO, logger="vbg.tuning"):
        result = tuning.measure("modnet", (128, 224), 1)
    assert {t.backend for t in result.trials} == {ONNXRUNTIME_CPU}
    assert result.best() is not None and result.best().error < TOLERANCE
    assert [r.message for r in caplog.records if "only onnxruntime" in r.message] == [
        "OpenVINO is not installed (`pip install openvino` adds it): only onnxruntime is measured"]


@needs_openvino
def test_without_an_intel_gpu_device_igpu_says_so_in_one_line(monkeypatch):
    if "GPU" in runtimes.openvino_devices()[0]:
        pytest.skip("this machine has an Intel GPU")
    chosen = trials(("modnet", ONNXRUNTIME_CPU, 250.0, 0.0), ("modnet", OV_CPU_F32, 150.0, 0.0))
    monkeypatch.setattr(tuning, "tuned", lambda *args: chosen)
    with pytest.raises(VbgError) as error:
        open_session(registry.get_spec("modnet"), device=IGPU)
    assert "\n" not in str(error.value) and "OpenVINO sees CPU" in str(error.value) and "--device cpu" in str(error.value)


@needs_openvino
def test_openvino_mattes_real_frames_as_onnxruntime_does(modnet_path):
    spec = registry.get_spec("modnet")
    frames = [person_frame(i * 7) for i in range(3)]
    reference = MattingSession(spec, modnet_path, matte_size=192)
    openvino = MattingSession(spec, modnet_path, backend=OV_CPU_F32, matte_size=192)
    assert openvino.provider == "OpenVINO CPU f32" and reference.provider == "CPUExecutionProvider"
    for frame in frames:
        expected, got = reference.infer(frame), openvino.infer(frame)
        assert got.shape == expected.shape == (192, 352)
        assert np.abs(got - expected).max() < 1e-3
        assert got[60:160, 150:200].mean() > 0.9 and got[:, :40].mean() < 0.05  # the astronaut, the wall
    if OV_CPU_BF16 in runtimes.available_backends():  # bf16: within the trial's tolerance
        bf16 = MattingSession(spec, modnet_path, backend=OV_CPU_BF16, matte_size=192)
        assert np.mean([np.abs(bf16.infer(f) - reference.infer(f)).mean() for f in frames]) < TOLERANCE


@needs_openvino
def test_the_real_trial_measures_every_backend_on_real_frames_and_is_read_back(monkeypatch):
    result = tuning.measure("modnet", (128, 224), 1)
    backends = {t.backend for t in result.trials if t.model == "modnet"}
    assert backends == set(runtimes.available_backends())
    assert result.trials[0].backend == ONNXRUNTIME_CPU and result.trials[0].error == 0.0  # the reference
    assert all(t.ms and t.ms > 0 for t in result.trials if not t.failed)
    assert result.best() is not None
    monkeypatch.setattr(tuning, "measure", lambda *a, **k: pytest.fail("measured again though nothing changed"))
    assert tuning.tuned("modnet", (128, 224), 1).trials == result.trials


@needs_openvino
def test_a_runtime_off_on_one_frame_of_the_trial_is_not_chosen(monkeypatch):
    """The trial compares every frame: a file that is close on average but far off on one kind of
    picture is refused (7-bit int8 weights on an AVX2 CPU: mean |Δα| 0.0064 over 3 frames, 0.0123 on
    the worst; 29.8 MAD on a dev clip where fp32 scores 6.8)."""
    run = MattingSession.run

    def off_on_the_last_frame(self, feeds):
        alpha = run(self, feeds)
        self.trial_runs = getattr(self, "trial_runs", 0) + 1  # a warm-up, then each trial frame once
        if self.backend.runtime == OPENVINO and self.trial_runs == 1 + tuning.TRIAL_FRAMES:
            alpha = np.clip(alpha + 0.04, 0, 1)
        return alpha
    monkeypatch.setattr(MattingSession, "run", off_on_the_last_frame)
    result = tuning.measure("modnet", (128, 224), 1)
    openvino = [t for t in result.trials if t.backend.runtime == OPENVINO and t.model == "modnet" and not t.failed]
    assert openvino and all(TOLERANCE < t.error < 0.05 for t in openvino), openvino
    # Averaged over the frames it would have passed (0.04 on one of five is 0.008).
    assert all(not t.usable for t in openvino)
    assert result.best().backend == ONNXRUNTIME_CPU
