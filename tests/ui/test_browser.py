"""A real browser on the page: Debian's Chromium driven by Playwright. Screenshots of every tab are saved under
test-artifacts/ (or $WAN_TEST_ARTIFACTS) for a person to look at."""

from __future__ import annotations

import pytest
from PIL import Image

from .conftest import needs_chromium, open_page, own_studio_page, shot, type_number

pytestmark = needs_chromium


@pytest.fixture
def page(browser, app):
    context, page = open_page(browser, app.url)
    yield page
    context.close()


def test_a_prompt_shows_a_live_preview_then_a_playable_video(page):
    shot(page, "01-text-to-video")
    page.fill("#t2v-prompt textarea", "a kite over a windy beach")
    page.click("#t2v-advanced")
    # 40 steps: the video comes well after the first preview, even on a loaded 2-core CI machine
    type_number(page, "#t2v-steps input[type=number]", "40")
    page.click("#t2v-generate")
    page.wait_for_selector("#t2v-preview img")
    assert page.locator("#t2v-video video").count() == 0, "the video arrived before any preview"
    shot(page, "02-text-to-video-running")
    page.wait_for_selector("#t2v-video video")
    duration = page.wait_for_function(
        "() => { const v = document.querySelector('#t2v-video video'); return v && v.duration > 0 && v.duration; }"
    ).json_value()
    assert duration > 0
    assert "seed" in page.inner_text("#t2v-status")
    shot(page, "03-text-to-video-done")


def test_every_tab_renders(page):
    for name, tab in [("04-image-to-video", "Image to Video"), ("05-prompt-refinement", "Prompt Refinement")]:
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        shot(page, name)


def test_a_refined_prompt_goes_to_the_text_to_video_tab(page):
    page.get_by_role("tab", name="Prompt Refinement").click()
    page.fill("#refine-prompt textarea", "a cat naps in a sunny window")
    page.click("#refine-run")
    page.wait_for_function("() => document.querySelector('#refine-result textarea').value.length > 200")
    refined = page.input_value("#refine-result textarea")
    assert "cat" in refined.lower()
    shot(page, "06-prompt-refined")
    page.click("#refine-to-t2v")
    page.wait_for_function("(text) => document.querySelector('#t2v-prompt textarea').value === text", arg=refined)


def test_the_gallery_lists_an_api_video_and_reuse_fills_the_tab(page, app):
    app.client().predict(prompt="a lighthouse made through the api", seed=4242, api_name="/text_to_video")
    page.get_by_role("tab", name="Gallery").click()
    item = page.locator("#gallery").get_by_text("a lighthouse made through the api · seed 4242")
    item.wait_for()
    shot(page, "07-gallery")
    item.click()
    page.wait_for_function("() => document.querySelector('#gallery-about').innerText.includes('4242')")
    page.click("#gallery-reuse")
    page.wait_for_function(
        "() => document.querySelector('#t2v-prompt textarea').value === 'a lighthouse made through the api'"
    )
    assert page.get_by_role("tab", name="Text to Video").get_attribute("aria-selected") == "true"
    shot(page, "08-reused-settings")


def test_a_tab_the_model_cannot_serve_offers_a_one_click_switch(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs") as (_app, page):  # switching models affects everyone
        page.click("#model-select input")
        page.get_by_role("option", name="Tiny I2V MoE").click()
        page.wait_for_function("() => document.querySelector('#model-state').innerText.includes('Tiny I2V MoE')")
        page.get_by_role("tab", name="Text to Video").click()
        needs = page.locator("#t2v-needs")
        needs.wait_for()
        assert "needs another model" in needs.inner_text()
        assert page.locator("#t2v-generate").is_disabled()
        shot(page, "09-text-to-video-needs-another-model")
        page.click("#t2v-switch")
        page.wait_for_function("() => document.querySelector('#model-state').innerText.includes('Tiny T2V MoE')")
        page.wait_for_function("() => !document.querySelector('#t2v-generate').disabled")
        assert page.locator("#t2v-needs").is_hidden()
        page.get_by_text("Advanced").first.click()
        page.locator("#t2v-advanced-guidance-2").wait_for()  # the MoE model's second guidance shows
        shot(page, "10-switched-to-moe-advanced")


def test_a_file_that_is_not_a_picture_is_refused_on_the_page_and_a_real_one_then_runs(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("not a picture at all")
    real = tmp_path / "real.png"
    Image.new("RGB", (96, 64), (40, 120, 200)).save(real)
    page.get_by_role("tab", name="Image to Video").click()
    page.set_input_files("#i2v-image input[type=file]", str(fake))
    page.fill("#i2v-prompt textarea", "the sea moves")
    page.click("#i2v-generate")
    toast = page.get_by_text("not a picture the studio can read")
    toast.first.wait_for()
    page.wait_for_function("() => !document.querySelector('#i2v-generate').disabled")  # ready for the next try
    shot(page, "11-image-that-is-not-a-picture")
    page.locator("#i2v-image button[aria-label='Remove Image']").click()
    page.set_input_files("#i2v-image input[type=file]", str(real))
    page.wait_for_selector("#i2v-image img")
    page.click("#i2v-generate")
    page.wait_for_selector("#i2v-video video")
    assert "seed" in page.inner_text("#i2v-status")
