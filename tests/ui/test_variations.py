"""Variations through the running studio: /variations, its refusals, the takes grid, marks and export in the
Gallery, and the side-by-side comparison playing in sync in a real browser."""

from __future__ import annotations

import zipfile

import pytest
from gradio_client.exceptions import AppError

from tests.ui.conftest import needs_chromium, open_page, shot, start_app, stop_app


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("variations") / "outputs", "--queue-size", "8")
    yield app
    stop_app(app)


def variations(app, **kw):
    kw = {"prompt": "a heron", "width": 64, "height": 64, "num_frames": 5, "steps": 2, **kw}
    job = app.client().submit(api_name="/variations", **kw)
    statuses = [out[2] for out in job]  # every streamed update
    return statuses, job.result()  # raises the refusal, when there is one


def test_a_seed_batch_streams_its_progress_and_ends_with_every_take(studio):
    statuses, (_preview, videos, status, takes) = variations(studio, count=3)
    assert status.startswith("Done: 3 of 3 takes"), status
    assert any(s.startswith("Take 2 of 3 (1 done)") for s in statuses), statuses
    assert len(videos) == 3 and len(takes) == 3
    assert len({t["seed"] for t in takes}) == 3
    assert [t["settings"]["batch"]["index"] for t in takes] == [1, 2, 3]


def test_a_wording_batch_keeps_one_seed_and_each_line(studio):
    _, (_preview, videos, _status, takes) = variations(studio, prompts="a red fox\na grey wolf", seed=77)
    assert [t["prompt"] for t in takes] == ["a red fox", "a grey wolf"]
    assert {t["seed"] for t in takes} == {77}
    assert takes[0]["settings"]["batch"]["varied"] == "wordings"


@pytest.mark.parametrize(
    "kw, words",
    [({"count": 12}, "between 2 and 8"), ({"prompts": " \n \n"}, "only blank lines"), ({}, "how many takes")],
)
def test_bad_batch_input_is_refused_before_anything_is_queued_and_the_next_call_runs(studio, kw, words):
    with pytest.raises(AppError, match=words):
        variations(studio, **kw)
    _, (_preview, videos, status, _takes) = variations(studio, count=2)
    assert status.startswith("Done: 2 of 2"), status


@needs_chromium
def test_the_grid_fills_and_the_takes_compare_in_sync_then_a_kept_take_exports(studio, browser):
    _, (_p, _v, _s, takes) = variations(studio, count=2, num_frames=33, fps=12, prompt="a slow tide")
    context, page = open_page(browser, studio.url)
    try:
        # no takes grid and no compare button before a batch exists
        assert not page.locator("#t2v-takes").is_visible() and not page.locator("#t2v-compare-takes").is_visible()
        # the tab: two takes in one click, the grid fills
        page.click("#t2v-variations")
        page.check("#t2v-variations-on input")
        page.fill("#t2v-prompt textarea", "a paper boat on a stream")
        page.fill("#t2v-takes-count input[type=number]", "2")
        page.press("#t2v-takes-count input[type=number]", "Enter")
        page.click("#t2v-generate")
        page.wait_for_function(
            "document.querySelector('#t2v-status').innerText.includes('Done: 2 of 2 takes')", timeout=120_000
        )
        assert page.locator("#t2v-takes img, #t2v-takes video").count() == 2
        page.click("#t2v-compare-takes")
        page.locator("#t2v-compare-view video").nth(1).wait_for()
        shot(page, "variations-grid-compare")

        # the Gallery: compare the two longer takes, one play/pause and one scrub for both
        page.get_by_role("tab", name="Gallery").click()
        page.click("#gallery-compare-pick input")
        for take in takes:
            page.get_by_role("option", name=f"take {take['settings']['batch']['index']}/2 · a slow tide").first.click()
        page.keyboard.press("Escape")
        page.click("#gallery-compare")
        videos = page.locator("#gallery-compare-view video")
        videos.nth(1).wait_for()
        page.wait_for_function(
            "Array.from(document.querySelectorAll('#gallery-compare-view video')).every(v => v.readyState >= 2)"
        )
        frame = 1 / takes[0]["settings"]["request"]["fps"]
        page.click("#gallery-compare-view .wan-compare-play")
        page.wait_for_timeout(800)
        times = page.eval_on_selector_all("#gallery-compare-view video", "vs => vs.map(v => v.currentTime)")
        assert min(times) > 0, times  # both play
        assert max(times) - min(times) <= frame, times
        page.click("#gallery-compare-view .wan-compare-play")  # pause
        page.eval_on_selector(
            "#gallery-compare-view .wan-compare-scrub",
            "s => { s.value = 500; s.dispatchEvent(new Event('input', {bubbles: true})); }",
        )
        page.wait_for_timeout(300)
        times = page.eval_on_selector_all("#gallery-compare-view video", "vs => vs.map(v => v.currentTime)")
        assert times[0] > 0 and max(times) - min(times) <= frame, times
        assert page.locator("#gallery-compare-view").get_by_text("seed").count() == 2  # only what differs
        shot(page, "gallery-compare-synced")

        # keep one take and export the batch's kept takes
        page.locator("#gallery").get_by_text("take 1/2 · a slow tide").first.click()
        page.click("#gallery-keep")
        page.locator("#gallery").get_by_text("✓ kept · take 1/2 · a slow tide").wait_for()
        page.click("#gallery-export")
        page.locator("#gallery-about").get_by_text("Exported").wait_for()
    finally:
        context.close()
    exports = list((studio.outputs / "exports").glob("*.zip"))
    assert len(exports) == 1
    with zipfile.ZipFile(exports[0]) as archive:
        assert sorted(archive.namelist()) == sorted(
            [takes[0]["video"].rsplit("/", 1)[1], "settings.csv", "settings.json"]
        )


@needs_chromium
def test_the_refiner_writes_distinct_wordings_to_edit_before_generating(studio, browser):
    context, page = open_page(browser, studio.url)
    try:
        wordings_from_the_refiner(page)
    finally:
        context.close()


def wordings_from_the_refiner(page) -> None:
    page.click("#t2v-variations")
    page.fill("#t2v-prompt textarea", "a lighthouse at dusk")
    page.fill("#t2v-takes-count input[type=number]", "3")
    page.press("#t2v-takes-count input[type=number]", "Enter")
    page.click("#t2v-wordings-refine")
    page.locator("#t2v-wordings-note").get_by_text("Wrote").wait_for()
    lines = [line for line in page.input_value("#t2v-wordings textarea").splitlines() if line.strip()]
    assert len(lines) == 3 and len(set(lines)) == 3
    assert all("lighthouse" in line for line in lines)
    assert page.is_checked("#t2v-variations-on input")
