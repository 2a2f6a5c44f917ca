"""End to end in a real headless browser (Debian's chromium driven by Playwright):
the control page changes the running pipeline and previews it, file names stay text,
and the OBS page shows the person over real transparency, through the server's Origin
check (so Chromium, as OBS's CEF browser source, sends the page's own origin).
Skipped where chromium or Playwright is missing; .ci/run installs both."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import person_frame, write_video
from live_helpers import Live, wait_for
from vbg import Settings

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"),
              pytest.mark.usefixtures("default_model_path")]
# Pages open with bypass_csp: the tests check the page's own code (a file name with markup must
# stay text even without the Content-Security-Policy, which is checked on the response) and
# Playwright's wait_for_function evaluates strings, which the policy forbids.
# Offline-friendly flags: without them chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


MARKUP_NAME = '"><img src=x onerror="window.pwned=1">.png'  # a file name as a downloaded pack might have
NON_UTF8_NAME = b"\xff\xfe-latin.png"  # a name the OS allows that is not UTF-8 (an old zip's)


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "person.avi", [person_frame(i) for i in range(12)])


@pytest.fixture
def live(tmp_path, video, background_image):
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    shutil.copy(background_image, folder / "stripes.png")
    shutil.copy(background_image, folder / MARKUP_NAME)
    shutil.copy(background_image, os.fsencode(folder) + b"/" + NON_UTF8_NAME)
    running = Live(video, Settings(output="null", serve=True, backgrounds=str(folder)))
    yield running
    running.close()


def test_control_page_click_changes_the_mode(browser, live):
    page = browser.new_page(bypass_csp=True)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    response = page.goto(live.base + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#thumbs button")  # the background chooser came from /api/state
    page.wait_for_function("window.vbgFrames > 3", timeout=30_000)  # the preview shows the stream
    lit = "() => { const d = document.getElementById('preview').getContext('2d')" \
          ".getImageData(0, 0, 320, 180).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }"
    assert page.evaluate(lit) > 320 * 180 * 0.9
    assert page.is_enabled("#blur")  # blur mode: its strength applies
    page.click("button[data-mode=color]")
    assert wait_for(lambda: live.state()["mode"] == "color")
    page.wait_for_selector("#blur:disabled")  # colour mode: the slider follows
    page.click("#thumbs button[data-name='stripes.png']")
    assert wait_for(lambda: live.state()["background"] == "stripes.png" and live.state()["mode"] == "image")
    page.wait_for_selector("button[data-mode=image].active")
    page.check("#mirror")
    assert wait_for(lambda: live.state()["mirror"] is True)
    page.click("button[data-mode=blur]")
    page.wait_for_selector("#blur:enabled")
    assert not [e for e in errors if "favicon" in e or "404" in e]


def test_a_background_named_with_markup_is_text_and_runs_nothing(browser, live):
    page = browser.new_page(bypass_csp=True)
    page.goto(live.base + "/")
    page.wait_for_selector("#thumbs button")
    captions = page.eval_on_selector_all("#thumbs button span", "spans => spans.map(s => s.textContent)")
    assert MARKUP_NAME in captions
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    page.click(f"#thumbs button[title='{MARKUP_NAME}']")
    assert wait_for(lambda: live.state()["background"] == MARKUP_NAME)
    page.wait_for_timeout(1500)  # a few polls re-render the state
    assert page.evaluate("window.pwned") is None


def test_without_backgrounds_the_page_says_how_to_add_them(browser, video):
    running = Live(video, Settings(output="null", serve=True))
    try:
        page = browser.new_page(bypass_csp=True)
        page.goto(running.base + "/")
        page.wait_for_selector("#thumbs .hint")
        assert "--backgrounds DIR" in page.text_content("#thumbs")
        page.click("button[data-mode=image]")
        page.wait_for_function("document.getElementById('error').textContent.includes('--backgrounds')")
        assert running.state()["mode"] == "blur"
    finally:
        running.close()


def test_obs_page_shows_the_person_over_transparency(browser, live):
    page = browser.new_page(bypass_csp=True, viewport={"width": 640, "height": 360})
    page.goto(live.base + "/obs")
    page.wait_for_function("window.vbgFrames > 3", timeout=30_000)
    alpha_at = "([x, y]) => document.getElementById('person').getContext('2d').getImageData(x, y, 1, 1).data[3]"
    assert page.evaluate(alpha_at, [360, 250]) > 230  # the astronaut's chest: opaque
    assert page.evaluate(alpha_at, [30, 30]) < 25  # the wall beside her: transparent
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert live.state()["viewers"] == 1  # the stream opened with the page's own Origin


def test_every_thumbnail_shows_even_for_a_name_that_is_not_utf8(browser, live):
    page = browser.new_page(bypass_csp=True)
    page.goto(live.base + "/")
    page.wait_for_function("document.querySelectorAll('#thumbs button').length === 3")
    page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth > 0)")
    shown = NON_UTF8_NAME.decode("utf-8", "backslashreplace")
    page.evaluate("name => [...document.querySelectorAll('#thumbs button')].find(b => b.title === name).click()", shown)
    assert wait_for(lambda: live.state()["background"] == shown and live.state()["mode"] == "image")


def test_the_preview_says_that_the_blurred_room_is_not_streamed(browser, live):
    page = browser.new_page(bypass_csp=True)
    page.goto(live.base + "/")
    page.wait_for_function("window.vbgFrames > 3", timeout=30_000)
    corner = "() => [...document.getElementById('preview').getContext('2d').getImageData(3, 3, 1, 1).data]"
    assert sum(page.evaluate(corner)[:3]) < 150  # the caption's dark band, not the plain backdrop (74, 79, 92)
    page.click("button[data-mode=color]")
    page.wait_for_function("document.querySelector('button[data-mode=color]').classList.contains('active')")
    page.wait_for_timeout(500)
    assert page.evaluate(corner)[:3] == [0, 177, 64]  # the chosen colour itself, no caption
