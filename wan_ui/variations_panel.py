"""The generation tabs' Variations: several takes in one click (seeds, wordings or both), a grid that fills as
each take finishes, and a side-by-side comparison of the takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import MAX_TAKES, Engine, find_video

from .compare import MAX_COMPARE, compare_html

VARY_CHOICES = [
    ("Seeds: the same words, a new seed each", "seeds"),
    ("Wordings: one take per line, one seed", "wordings"),
    ("Both: one take per line, each its own seed", "both"),
]
SEED_CHOICES = [("Random", "random"), ("Consecutive from the seed", "consecutive")]


@dataclass
class VariationsPanel:
    on: gr.Checkbox
    count: gr.Slider
    vary: gr.Radio
    seeds: gr.Radio
    wordings: gr.Textbox
    from_refiner: gr.Button  # wired by the refine tab, which holds the refiner
    refiner_note: gr.Markdown
    grid: gr.Gallery
    compare: gr.Button
    view: gr.HTML
    takes: gr.State  # the last batch's finished videos, in take order

    @property
    def inputs(self) -> list[Any]:
        return [self.on, self.count, self.vary, self.seeds, self.wordings]


def build_controls(mode: str) -> tuple:
    """The choices, in the tab's left column."""
    with gr.Accordion("Variations: several takes in one click", open=False, elem_id=f"{mode}-variations"):
        on = gr.Checkbox(label="Make several takes", value=False, elem_id=f"{mode}-variations-on")
        vary = gr.Radio(VARY_CHOICES, value="seeds", label="What varies", elem_id=f"{mode}-vary")
        with gr.Row():
            count = gr.Slider(2, MAX_TAKES, value=4, step=1, label="Takes (seeds)", elem_id=f"{mode}-takes-count")
            seeds = gr.Radio(SEED_CHOICES, value="random", label="Seeds", elem_id=f"{mode}-seed-mode")
        wordings = gr.Textbox(
            label=f"Wordings: one prompt per line (up to {MAX_TAKES}); the style words are added to each",
            lines=4,
            max_lines=MAX_TAKES + 2,
            elem_id=f"{mode}-wordings",
        )
        from_refiner = gr.Button(
            "Write the wordings with the refiner (as many as the takes), to edit before you generate",
            size="sm",
            elem_id=f"{mode}-wordings-refine",
        )
        refiner_note = gr.Markdown("", elem_id=f"{mode}-wordings-note")
    return on, count, vary, seeds, wordings, from_refiner, refiner_note


def build_results(mode: str) -> tuple:
    """The grid and the comparison, in the tab's right column: hidden until the first batch of takes starts."""
    grid = gr.Gallery(
        visible=False,
        label="Takes",
        columns=4,
        height=260,
        object_fit="contain",
        allow_preview=False,
        interactive=False,
        elem_id=f"{mode}-takes",
    )
    compare = gr.Button(
        f"Compare the takes side by side (first {MAX_COMPARE})",
        size="sm",
        interactive=False,
        visible=False,
        elem_id=f"{mode}-compare-takes",
    )
    view = gr.HTML("", elem_id=f"{mode}-compare-view")
    return grid, compare, view


def caption(index: int, count: int, seed: int | None, prompt: str) -> str:
    words = prompt if len(prompt) <= 60 else prompt[:57].rstrip() + "…"
    return f"take {index}/{count} · seed {seed} · {words}"


def wire(panel: VariationsPanel, engine: Engine) -> None:
    private = {"api_visibility": "private", "queue": False}

    def compare(paths: list[str] | None):
        videos = [v for p in (paths or [])[:MAX_COMPARE] if (v := find_video(engine.outputs, p)) is not None]
        return compare_html(videos)

    panel.compare.click(compare, panel.takes, panel.view, **private)
