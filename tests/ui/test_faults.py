"""Faults as a person at the page meets them: the studio stays up, says what went wrong, and offers a way on.

Debian's Chromium through Playwright on a real `python app.py` (skipped where /usr/bin/chromium is missing).
"""

from __future__ import annotations

from engine import list_videos

from .conftest import needs_chromium, start_app, stop_app

pytestmark = needs_chromium


def test_a_model_that_cannot_load_leaves_the_studio_up_and_another_can_be_picked(browser, tmp_path):
    app = start_app(tmp_path / "outputs", "--model", "/nonexistent/folder")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(90_000)
        page.goto(app.url)
        page.wait_for_selector("#model-state")
        state = page.inner_text("#model-state")
        assert "/nonexistent/folder" in state and "failed" in state
        assert "is neither a catalog model, a folder, nor a Hub id" in state  # the reason, in the user's words
        assert "tiny-ti2v" in state  # and what to choose instead
        assert page.input_value("#model-select input") == "/nonexistent/folder"  # the selector says what was asked
        page.click("#model-select input")
        page.get_by_role("option", name="Tiny TI2V").click()
        page.wait_for_function(
            "() => { const s = document.querySelector('#model-state').innerText;"
            " return s.includes('Tiny TI2V') && s.includes('ready'); }"
        )
        page.fill("#t2v-prompt textarea", "a lantern drifts over a dark lake")
        page.click("#t2v-generate")
        page.wait_for_selector("#t2v-video video")
        assert "seed" in page.inner_text("#t2v-status")
        assert [v.prompt for v in list_videos(app.outputs)] == ["a lantern drifts over a dark lake"]
        assert app.process.poll() is None
    finally:
        context.close()
        stop_app(app)
