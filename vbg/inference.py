"""Opening what runs a ``--model``: one model's session, or a hybrid of two.

This is where a registry entry (:mod:`vbg.registry`) meets the sessions that run it
(:mod:`vbg.session` for one model, :mod:`vbg.hybrid` for two): neither of those
modules needs the other, and the registry knows nothing of sessions.
"""

from __future__ import annotations

import logging

from vbg.errors import VbgError
from vbg.hybrid import HybridSession
from vbg.registry import AUTO, ModelSpec, ensure_model, get_spec, hybrid_parts
from vbg.config import DEVICES
from vbg.runtimes import GPU, ONNXRUNTIME, Backend, onnxruntime_gpu
from vbg.session import MattingSession, Session
from vbg.tuning import Tuning, cached, choose, family_of, live_shape, measure, tunable

log = logging.getLogger(__name__)

DETAIL_THREADS = 1  # the hybrid's detail model: one thread, the other core is the per-frame work's
# A model that the trial measured this fast (ms a matte at the live size) mattes every frame itself:
# at 30 fps a frame has 33 ms, and the per-frame work around the matte takes about 20 ms of it.
EVERY_FRAME_MS = 12.0


def open_session(spec: ModelSpec, *, device: str = "auto", matte_size: int | None = None) -> Session:
    """A session for ``spec``, its weights pulled or made first if needed, on the runtime the trial
    (:mod:`vbg.tuning`) found fastest here; for a hybrid entry (:mod:`vbg.hybrid`) its fast and
    detail models together, one inference thread each, or where the detail model keeps up with
    every frame (on a GPU) the detail model alone."""
    if device not in DEVICES:
        raise VbgError(f"--device must be one of {', '.join(DEVICES)}, not '{device}'")
    on_gpu = device in ("auto", GPU) and onnxruntime_gpu()
    if not spec.hybrid:
        if on_gpu:
            return MattingSession(spec, ensure_model(spec), backend=Backend(ONNXRUNTIME, GPU), matte_size=matte_size)
        chosen, backend, trial = choose(spec, device, matte_size=matte_size)
        return MattingSession(chosen, ensure_model(chosen), backend=backend, matte_size=matte_size,
                              every_frame=True if trial and trial.ms <= EVERY_FRAME_MS else None)
    fast, detail = hybrid_parts(spec, on_gpu)
    matte_size = matte_size or spec.default_matte_size
    if on_gpu:  # the detail model alone keeps up with every frame there, with its own edges
        log.info("%s on a GPU: %s alone, every frame", spec.name, detail.name)
        return MattingSession(detail, ensure_model(detail), backend=Backend(ONNXRUNTIME, GPU), matte_size=matte_size)
    any_file = spec.hybrid[1] == AUTO  # the trial may pick MODNet's fp32 or int8 file
    chosen, backend, trial = choose(get_spec(family_of(detail)) if any_file else detail, device,
                                    matte_size=matte_size, threads=DETAIL_THREADS, any_file=any_file)
    detail = chosen if trial else detail  # untried (VBG_RUNTIME): the file the CPU's flags pick (hybrid_parts)
    if trial and trial.ms <= EVERY_FRAME_MS:
        log.info("%s: %s keeps up with every frame here (%.0f ms a matte): it mattes every frame alone",
                 spec.name, detail.name, trial.ms)
        return MattingSession(detail, ensure_model(detail), backend=backend, matte_size=matte_size,
                              every_frame=True)
    return HybridSession(spec, MattingSession(fast, ensure_model(fast), threads=1),
                         MattingSession(detail, ensure_model(detail), backend=backend, matte_size=matte_size,
                                        threads=DETAIL_THREADS))


def _trial_of(spec: ModelSpec, matte_size: int | None) -> tuple[ModelSpec, tuple[int, int], int]:
    """What :func:`open_session` measures for ``spec``: the model tried, its shape and threads."""
    if spec.hybrid:
        detail = hybrid_parts(spec)[1]
        target = get_spec(family_of(detail)) if spec.hybrid[1] == AUTO else detail
        return target, live_shape(target, matte_size or spec.default_matte_size), DETAIL_THREADS
    return spec, live_shape(spec, matte_size), 0


def tune(spec: ModelSpec, matte_size: int | None = None) -> tuple[Tuning, ModelSpec]:
    """Measure now, again, which runtime runs ``spec`` (a hybrid: its detail model) fastest here."""
    target, shape, threads = _trial_of(spec, matte_size)
    if not tunable(target):
        raise VbgError(f"model '{spec.name}' needs no trial: it runs on onnxruntime "
                       "(only MODNet, the slow model, is measured)")
    return measure(family_of(target), shape, threads), target


def tuned_choice(spec: ModelSpec, matte_size: int | None = None) -> str:
    """What the last trial chose for ``spec``, one line, or that it was not measured yet."""
    target, shape, threads = _trial_of(spec, matte_size)
    if not tunable(target):
        return "onnxruntime (no trial: only MODNet, the slow model, is measured)"
    trial = cached(family_of(target), shape, threads)
    chosen = trial.best(models=None if spec.hybrid and spec.hybrid[1] == AUTO else (target.name,)) if trial else None
    if chosen is None:
        return "not measured yet: the first run measures it (seconds), or `vbg models tune` now"
    return trial.describe(chosen)
