"""Faults as a person at the page meets them: the studio stays up, says what went wrong, and offers a way on.

Debian's Chromium through Playwright on a real `python app.py` (skipped where /usr/bin/chromium is missing).
"""

from __future__ import annotations

from engine import list_videos

from .conftest import needs_chromium, own_studio_page

pytestmark = needs_chromium


def test_a_model_that_cannot_load_leaves_the_studio_up_and_another_can_be_picked(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs", "--model", "/nonexistent/folder") as (app, page):
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
