"""The hybrid matte: the fast model corrects where the newest detail matte is stale, keeps its edges elsewhere."""

import threading
import time

import cv2
import numpy as np
import pytest

from conftest import person_frame
from test_smoothing import HEIGHT, SHIRT, WIDTH
from vbg.errors import VbgError
from vbg.flow import flow_grey
from vbg.hybrid import STEADY, UNSTEADY, HybridSession, _unexplained, fuse
from vbg.matting import Matter
from vbg.propagation import Propagator
from vbg.registry import _spec_from_table, ensure_model, get_spec, hybrid_parts
from vbg.session import MattingSession

WALL = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)  # a plain wall: nothing for the flow to follow there


def person(arm_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured body on the left and an arm (a block) at ``arm_x`` over a plain wall, and the true
    matte with soft (2 px) edges."""
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[:, :50] = 1.0
    mask[30:50, arm_x:arm_x + 20] = 1.0
    alpha = cv2.GaussianBlur(mask, (0, 0), 1.0)
    frame = (SHIRT * alpha[..., None] + WALL * (1 - alpha[..., None])).astype(np.uint8)
    return frame, alpha


def coarse(alpha: np.ndarray) -> np.ndarray:
    """What a fast low-resolution segmenter gives: the right place, blurry edges."""
    small = cv2.resize(alpha, (WIDTH // 4, HEIGHT // 4), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR), (0, 0), 1.5)


def shade(frame: np.ndarray) -> np.ndarray:
    return flow_grey(frame, frame.shape[:2]).astype(np.float32) / 255


STILL = np.zeros((HEIGHT, WIDTH), np.float32)  # the flow explains every pixel


def test_the_hybrid_follows_an_arm_the_stale_detail_matte_lost():
    frame_then, detail_then = person(arm_x=70)
    frame_now, truth_now = person(arm_x=120)  # the arm swung 50 px since the detail model's frame
    moved, moved_fast, moved_shade = cv2.split(Propagator()(
        cv2.merge([detail_then, coarse(detail_then), shade(frame_then)]),
        flow_grey(frame_then, detail_then.shape), frame_now))
    hybrid = fuse(moved, coarse(truth_now), moved_fast, cv2.absdiff(moved_shade, shade(frame_now)))
    error = lambda alpha: np.abs(alpha - truth_now)  # noqa: E731
    assert error(hybrid).mean() < 0.4 * error(moved).mean()  # the old arm gone, the new one there
    assert error(hybrid)[30:50, 70:90].mean() < 0.1  # where the arm was: the wall shows again
    # Where it is now: the person shows, as far as the fast model is sure of it (its soft edge, where
    # it is not, spans 8 rows above and below the 20-row arm; 3 of them, alpha 0.3-0.7, are left out).
    assert error(hybrid)[33:47, 125:135].mean() < 0.1
    body_edge = (slice(None), slice(44, 56))  # still: the detail matte's sharp edge is kept, not the blur
    assert error(hybrid)[body_edge].mean() < 0.5 * error(coarse(truth_now))[body_edge].mean()


def test_where_the_fast_model_saw_no_change_the_detail_matte_is_kept_exactly():
    """Even where the fast model disagrees with the detail model: on a still scene it is the coarser one."""
    _, alpha = person(arm_x=70)
    wrong = np.clip(alpha + 0.2, 0, 1)
    wrong[:20, 100:] = 1.0  # a patch of wall the fast model takes for the person, frame after frame
    assert np.array_equal(fuse(alpha, wrong, wrong, STILL), alpha)


def test_where_the_flow_cannot_explain_the_frame_a_sure_fast_model_corrects_the_detail_matte():
    """MODNet now and then loses a body part in one frame (a child's sun hat against the sky, on the
    dev clips); the fast model, sure of it in both frames, saw no change, so only a move the flow
    cannot explain (here: the arm's pixels changed) lets it correct that matte until the next one."""
    _, alpha = person(arm_x=70)
    lost = alpha.copy()
    lost[25:55, 65:95] = 0.0  # the detail model's matte lost the arm
    fast = coarse(alpha)
    unexplained = STILL.copy()
    unexplained[25:55, 65:95] = 0.1
    arm = (slice(36, 44), slice(76, 84))  # where the fast model is sure of the arm (above 0.95)
    assert np.abs(fuse(lost, fast, fast, unexplained) - alpha)[arm].max() < 0.1
    assert np.array_equal(fuse(lost, fast, fast, STILL), lost)  # explained: the detail matte holds


def test_a_change_of_light_is_explained_a_missed_move_is_not():
    """Auto exposure brightens the whole frame between the detail model's frame and this one (the
    virtual-camera test's clip does, 2 levels a frame): that must not unprove the moved detail matte."""
    dim = lambda image: (40 + 0.6 * image).astype(np.uint8)  # noqa: E731 - room to brighten without clipping
    frame, moved_arm = dim(person(arm_x=70)[0]), dim(person(arm_x=80)[0])
    brighter = frame + np.uint8(12)
    assert _unexplained(shade(frame), shade(brighter)).max() < STEADY
    assert _unexplained(shade(frame), shade(moved_arm))[30:50, 70:100].max() > UNSTEADY


def test_where_the_fast_model_only_wavers_the_detail_matte_is_kept():
    """The fast model's confidence in a still body drops from 0.96 to 0.28 between two frames (seen
    live on the astronaut's white suit): that is no motion, and the person must not turn half
    transparent there (the OBS page showed her chest at alpha 0.85 before the fast model had to be sure)."""
    _, alpha = person(arm_x=70)
    fast_then, fast_now = coarse(alpha), coarse(alpha)
    fast_then[:, :40] = 0.96
    fast_now[:, :40] = 0.28
    assert np.abs(fuse(alpha, fast_now, fast_then, STILL) - alpha)[:, :40].max() < 1e-6


def test_the_registry_entry_names_a_fast_and_a_detail_model():
    fast, detail = hybrid_parts(get_spec("hybrid"))
    assert fast.name == "selfie-landscape"
    assert detail.name in ("modnet", "modnet-int8")  # 'auto': the one that fits this CPU
    with pytest.raises(VbgError, match="'fast'"):
        _spec_from_table("broken", {"licence": "x", "description": "x", "default_matte_size": 256,
                                    "hybrid": {"detail": "modnet"}})


@pytest.fixture(scope="module")
def hybrid_session(modnet_path):
    """The real models: selfie-landscape and MODNet (fp32, at a small matte size to be quick)."""
    fast = get_spec("selfie-landscape")
    return HybridSession(get_spec("hybrid"), MattingSession(fast, ensure_model(fast), threads=1),
                         MattingSession(get_spec("modnet"), modnet_path, matte_size=128, threads=1))


def test_offline_every_matte_is_the_detail_models_own(hybrid_session):
    frame = person_frame()
    hybrid_session.reset()
    alpha = hybrid_session.infer(frame)
    assert np.array_equal(alpha, hybrid_session.detail.infer(frame))


def test_finer_live_mattes_have_the_detail_models_resolution_and_keep_its_matte_where_nothing_moves(modnet_path):
    """Live mattes are made at the fast model's size, or where the pipeline finds the CPU affords
    it (finer), at the detail model's: then on a still frame the live matte is the detail model's
    own, as offline. Switching size keeps the newest detail matte (no new first matte)."""
    fast = get_spec("selfie-landscape")
    hybrid_session = HybridSession(get_spec("hybrid"), MattingSession(fast, ensure_model(fast), threads=1),
                                   MattingSession(get_spec("modnet"), modnet_path, matte_size=192, threads=1))
    frame = person_frame()
    own = hybrid_session.detail.infer(frame)
    hybrid_session.go_live(True)
    try:
        coarse = [hybrid_session.infer(frame) for _ in range(3)]  # the first: the detail model's own
        waited = []
        detail_infer = hybrid_session.detail.infer
        hybrid_session.detail.infer = lambda image: waited.append(threading.current_thread()) or detail_infer(image)
        assert hybrid_session.finer(True) and not hybrid_session.finer(True)
        fine = [hybrid_session.infer(frame) for _ in range(3)]
        assert threading.current_thread() not in waited  # no first matte made while the frame waited
        deadline = time.monotonic() + 10
        while len(waited) < 2 and time.monotonic() < deadline:  # a detail matte at the new size
            fine.append(hybrid_session.infer(frame))
        fine.append(hybrid_session.infer(frame))
        assert hybrid_session.finer(False)
        back = hybrid_session.infer(frame)
    finally:
        hybrid_session.close()
    assert all(m.shape == (144, 256) for m in coarse + [back])  # the fast model's input size
    assert all(m.shape == own.shape == (192, 352) for m in fine)  # the detail model's, as offline
    fast_matte = cv2.resize(hybrid_session.fast.infer(frame), own.shape[::-1])
    assert np.abs(fast_matte - own).mean() > 0.02  # the two models disagree in places ...
    assert np.abs(fine[-1] - own).mean() < 0.002  # ... but on a still frame the detail model's matte is kept
    assert np.abs(coarse[-1] - cv2.resize(own, (256, 144), interpolation=cv2.INTER_AREA)).mean() < 0.01



def test_live_at_the_detail_models_size_the_smoothing_finds_its_flow_small(modnet_path):
    """Live mattes at MODNet's 448x256 are smoothed along a flow found 256 wide (5.5 ms a frame less on a
    2-core CPU, no loss live, where the moved matte already holds still); offline, where MODNet's own
    mattes flicker, the flow keeps the matte's width."""
    fast = get_spec("selfie-landscape")
    hybrid_session = HybridSession(get_spec("hybrid"), MattingSession(fast, ensure_model(fast), threads=1),
                                   MattingSession(get_spec("modnet"), modnet_path, matte_size=256, threads=1))
    frame = person_frame()
    offline = Matter(hybrid_session, 0.6)
    offline(frame)
    hybrid_session.go_live(True)
    hybrid_session.finer(True)
    live = Matter(hybrid_session, 0.6)
    try:
        for _ in range(2):
            live(frame)
    finally:
        hybrid_session.close()
    assert offline.reduced[1].shape == live.reduced[1].shape == (256, 448)
    assert offline.grey.shape[1] == 448 and live.grey.shape[1] == 256

def detail_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "detail" and thread.is_alive()]


def test_closing_stops_the_detail_thread_and_the_next_live_matte_starts_it_again(hybrid_session):
    """`vbg eval --live` runs one pipeline per clip on one session, and each pipeline closes it:
    no detail thread may be left behind a closed pipeline, and the next clip must get one."""
    frame = person_frame()
    hybrid_session.reset()
    hybrid_session.go_live(True)
    try:
        for _ in range(2):  # the first matte is the detail model's own; the second starts its thread
            hybrid_session.infer(frame)
        assert len(detail_threads()) == 1
        hybrid_session.close()
        assert detail_threads() == []
        hybrid_session.reset()
        for _ in range(2):
            hybrid_session.infer(frame)
        assert len(detail_threads()) == 1
    finally:
        hybrid_session.go_live(False)
        hybrid_session.close()
    assert detail_threads() == []
