"""What a user types before the page's first update arrives is never overwritten by a model's default.

The first update is held back in the browser (Playwright holds every call to the server) while the test types, so
these tests cannot pass by timing luck: the update always arrives after the typing.
"""

from __future__ import annotations

from .conftest import needs_chromium, own_studio_page, type_number

pytestmark = needs_chromium

UPDATES = "**/gradio_api/run/predict"  # the header's updates, the first one included (queue=False events)
STEPS = "#t2v-steps input[type=number]"
TAKES = "#t2v-takes-count input[type=number]"


class HeldUpdates:
    """Holds the page's calls to the server until release(), then waits until they have all been answered."""

    def __init__(self, page):
        self.page, self.held, self.answered, self.released = page, [], 0, False
        page.on("response", self._answered)
        page.route(UPDATES, self._hold)

    def _hold(self, route) -> None:
        if self.released:
            route.continue_()
        else:
            self.held.append(route)

    def _answered(self, response) -> None:
        if "/run/predict" in response.url:
            self.answered += 1

    def release(self) -> None:
        assert self.held, "the page's first update was not held back"
        self.released = True
        count = len(self.held)
        for route in self.held:
            route.continue_()
        for _ in range(300):
            if self.answered >= count + 1:  # the held ones and one update after them
                break
            self.page.wait_for_timeout(100)
        self.page.wait_for_timeout(500)  # the browser applies the last replies


def open_held(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(90_000)
    held = HeldUpdates(page)
    page.goto(url)
    page.click("#t2v-advanced")  # a closed accordion's controls are drawn when it opens
    page.wait_for_selector(STEPS)
    return context, page, held


def type_before_the_first_update(page) -> None:
    page.fill("#t2v-prompt textarea", "a heron lands on a pond")
    type_number(page, STEPS, "7")
    page.click("#t2v-variations")
    type_number(page, TAKES, "3")


def test_the_page_shows_the_models_defaults_before_any_update_and_keeps_what_was_typed(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs") as (app, _):
        context, page, held = open_held(browser, app.url)
        try:
            assert page.input_value(STEPS) == "4"  # the launch model's default, in the page as built
            type_before_the_first_update(page)
            held.release()
            assert page.input_value("#t2v-prompt textarea") == "a heron lands on a pond"
            assert page.input_value(STEPS) == "7"
            assert page.input_value(TAKES) == "3"
        finally:
            context.close()


def test_a_page_opened_after_a_model_switch_takes_the_new_defaults_but_keeps_what_was_typed(browser, tmp_path):
    with own_studio_page(browser, tmp_path / "outputs") as (app, first):
        first.locator("#model-select input").click()
        first.get_by_role("option", name="Tiny T2V MoE").click()
        first.locator("#model-state").get_by_text("ready", exact=False).wait_for(timeout=120_000)
        context, page, held = open_held(browser, app.url)
        try:
            assert page.input_value("#t2v-guidance input[type=number]") == "5"  # built for the 5B-style model
            type_before_the_first_update(page)
            held.release()
            assert page.input_value(STEPS) == "7"  # typed: kept
            assert page.input_value("#t2v-guidance input[type=number]") == "4"  # untouched: the MoE's default
            assert page.locator("#t2v-advanced-guidance-2").is_visible()  # the second expert's guidance appears
            assert page.input_value(TAKES) == "3"
        finally:
            context.close()
