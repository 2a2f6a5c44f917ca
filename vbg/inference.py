"""Opening what runs a ``--model``: one model's session, or a hybrid of two.

This is where a registry entry (:mod:`vbg.registry`) meets the sessions that run it
(:mod:`vbg.session` for one model, :mod:`vbg.hybrid` for two): neither of those
modules needs the other, and the registry knows nothing of sessions.
"""

from __future__ import annotations

import logging

import onnxruntime as ort

from vbg.hybrid import HybridSession
from vbg.registry import ModelSpec, ensure_model, hybrid_parts
from vbg.session import GPU_PROVIDERS, MattingSession, Session, choose_providers

log = logging.getLogger(__name__)


def open_session(spec: ModelSpec, *, device: str = "auto", matte_size: int | None = None) -> Session:
    """A session for ``spec``, its weights pulled or made first if needed; for a hybrid entry
    (:mod:`vbg.hybrid`) its fast and detail models together, one inference thread each, or
    where inference runs on a GPU its detail model alone."""
    if not spec.hybrid:
        return MattingSession(spec, ensure_model(spec), device=device, matte_size=matte_size)
    gpu = choose_providers(device, ort.get_available_providers())[0] in GPU_PROVIDERS
    fast, detail = hybrid_parts(spec, gpu)
    if gpu:  # the detail model alone keeps up with every frame there, with its own edges
        log.info("%s on a GPU: %s alone, every frame", spec.name, detail.name)
        return MattingSession(detail, ensure_model(detail), device=device,
                              matte_size=matte_size or spec.default_matte_size)
    return HybridSession(spec, MattingSession(fast, ensure_model(fast), device=device, threads=1),
                         MattingSession(detail, ensure_model(detail), device=device,
                                        matte_size=matte_size or spec.default_matte_size, threads=1))
