"""End to end in a real headless browser (Debian's chromium driven by Playwright):
the control page changes the running pipeline, and the OBS page shows the person over
real transparency. Skipped where chromium or Playwright is missing; .ci/run installs both."""

from __future__ import annotations

import shutil
import time

import pytest

from conftest import person_frame, write_video
from live_helpers import Live
from vbg import Settings

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"),
              pytest.mark.usefixtures("default_model_path")]
# Offline-friendly flags: without them chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def live(tmp_path, background_image):
    video = write_video(tmp_path / "person.avi", [person_frame(i) for i in range(12)])
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    shutil.copy(background_image, folder / "stripes.png")
    running = Live(video, Settings(output="null", serve=True, backgrounds=str(folder)))
    yield running
    running.close()


def wait_for(check, seconds: float = 15.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_control_page_click_changes_the_mode(browser, live):
    page = browser.new_page()
    page.goto(live.base + "/")
    page.wait_for_selector("#thumbs button")  # the background chooser came from /api/state
    page.click("button[data-mode=color]")
    assert wait_for(lambda: live.state()["mode"] == "color")
    page.click("#thumbs button[data-name='stripes.png']")
    assert wait_for(lambda: live.state()["background"] == "stripes.png" and live.state()["mode"] == "image")
    page.wait_for_selector("button[data-mode=image].active")
    page.check("#mirror")
    assert wait_for(lambda: live.state()["mirror"] is True)


def test_obs_page_shows_the_person_over_transparency(browser, live):
    page = browser.new_page(viewport={"width": 640, "height": 360})
    page.goto(live.base + "/obs")
    page.wait_for_function("window.vbgFrames > 3", timeout=30_000)
    alpha_at = "([x, y]) => document.getElementById('person').getContext('2d').getImageData(x, y, 1, 1).data[3]"
    assert page.evaluate(alpha_at, [360, 250]) > 230  # the astronaut's chest: opaque
    assert page.evaluate(alpha_at, [30, 30]) < 25  # the wall beside her: transparent
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert live.state()["viewers"] == 1
