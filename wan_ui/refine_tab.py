"""Prompt refinement on the page: the Prompt Refinement tab, the Refine buttons of the generation tabs, and the
/refine_prompt endpoint. Refinement runs through Engine.refine so a local LLM never competes with a video job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import REFINE_BACKENDS, Engine, PromptRefiner, Refined, RefinedPrompt, StudioError

from . import choices
from .inputs import picture_input
from .runs import refuse

log = logging.getLogger("wan_studio.ui")
LANGUAGES = [("English", "en"), ("Chinese", "zh")]  # plain names: a browser may lack CJK fonts


def run_refine(
    engine: Engine, refiner: PromptRefiner, prompt: str, image: Any, backend: str, language: str, mode: str,
    style: str | None = None, variant: int = 0,
) -> RefinedPrompt:  # fmt: skip
    """Refine through the engine and wait; raises NotRefined with the reason when there is nothing to refine."""
    try:
        job = engine.refine(refiner, prompt or "", image=image, language=language, mode=mode, backend=backend,
                            style=None if style in (None, "", "none") else style, variant=variant)  # fmt: skip
    except (StudioError, ValueError) as exc:
        raise NotRefined(str(exc)) from None
    end = job.wait()
    if isinstance(end, Refined):
        return end.result
    raise NotRefined(getattr(end, "message", "Refinement stopped."))


class NotRefined(Exception):
    """A refusal or failure of the refiner: the page shows it beside the prompt, the API raises it for the client."""


def not_refined(exc: NotRefined) -> str:
    log.info("Can't refine: %s", exc)
    return f"**Not refined:** {exc}"


def describe(result: RefinedPrompt) -> str:
    words = len(result.text.split()) if result.language == "en" else len(result.text)
    unit = "words" if result.language == "en" else "characters"
    made = f"Written by **{result.backend}**" + (f" ({result.model})" if result.model else "")
    seconds = sum(result.timings.values()) if result.timings else 0.0
    lines = [f"{made} · {words} {unit} · {seconds:.1f} s"]
    if result.notice:
        lines.append(f"**Note:** {result.notice}" if result.fell_back else result.notice)
    return "  \n".join(lines)


def backend_choices(refiner: PromptRefiner) -> list[tuple[str, str]]:
    status = refiner.backend_status()
    labels = {"rules": "Rules (offline, instant)", "local": "Local LLM", "openai": "OpenAI-compatible server"}
    return [(labels[b] + ("" if status.get(b) is None else " (not set up)"), b) for b in REFINE_BACKENDS]


def backend_help(refiner: PromptRefiner) -> str:
    lines = [f"- **{name}**: {why}" for name, why in refiner.backend_status().items() if why]
    if not lines:
        return "All refiners are available."
    return "A refiner that isn't set up falls back to the offline rules:\n" + "\n".join(lines)


@dataclass
class RefineTab:
    prompt: gr.Textbox
    image: gr.Image
    backend: gr.Radio
    language: gr.Radio
    mode: gr.Radio
    style: gr.Dropdown
    run: gr.Button
    refined: gr.Textbox
    about: gr.Markdown
    to_t2v: gr.Button
    to_i2v: gr.Button
    meta: gr.State


def build_refine_tab(refiner: PromptRefiner) -> RefineTab:
    gr.Markdown(
        "Wan2.2 follows long, concrete prompts best: shot size, camera angle and movement, light, time of day, "
        "colour and step-by-step motion. Type a short idea; the refiner writes the long version for you to edit."
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            prompt = gr.Textbox(label="Your idea", lines=4, elem_id="refine-prompt")
            image = picture_input(label="Image (optional, for Image to Video)", height=200)
            with gr.Row():
                default = refiner.config.backend if refiner.config.backend in REFINE_BACKENDS else "rules"
                backend = gr.Radio(backend_choices(refiner), value=default, label="Refiner", elem_id="refine-backend")
                language = gr.Radio(LANGUAGES, value="en", label="Write the prompt in")
            with gr.Row():
                mode = gr.Radio([("Text to Video", "t2v"), ("Image to Video", "i2v")], value="t2v", label="For")
                style = gr.Dropdown(choices.style_choices(), value="none", label="Style")
            gr.Markdown(backend_help(refiner))
            run = gr.Button("Refine", variant="primary", elem_id="refine-run")
        with gr.Column():
            refined = gr.Textbox(label="Refined prompt (edit freely)", lines=10, elem_id="refine-result")
            about = gr.Markdown()
            with gr.Row():
                to_t2v = gr.Button("Use in Text to Video", elem_id="refine-to-t2v")
                to_i2v = gr.Button("Use in Image to Video", elem_id="refine-to-i2v")
    return RefineTab(prompt, image, backend, language, mode, style, run, refined, about, to_t2v, to_i2v, gr.State())


def refined_extra(meta: dict | None, original: str) -> dict[str, Any]:
    """What a generation keeps about the refinement (GenerationRequest.extra)."""
    return {} if not meta else {"refined_prompt": meta, "original_prompt": original}


def wire_refine(tab: RefineTab, engine: Engine, refiner: PromptRefiner, generate_tabs: dict, tab_set) -> None:
    events = {"api_visibility": "private", "concurrency_limit": 4, "concurrency_id": "refine"}

    def refine(prompt, image, backend, language, mode, style):
        try:
            result = run_refine(engine, refiner, prompt, image, backend, language, mode, style)
        except NotRefined as exc:
            return gr.skip(), not_refined(exc), gr.skip()
        return result.text, describe(result), result.as_metadata()

    tab.run.click(
        refine, [tab.prompt, tab.image, tab.backend, tab.language, tab.mode, tab.style],
        [tab.refined, tab.about, tab.meta], **events,
    )  # fmt: skip

    def send(mode: str):
        target = generate_tabs[mode]

        def go(text, meta, original, image):
            if not (text or "").strip():
                return {tab.about: "**Nothing to send:** refine a prompt first (or type one in the box)."}
            out = {
                tab.about: gr.skip(),
                target.prompt: text,
                target.extra: refined_extra(meta, original),
                tab_set: gr.Tabs(selected=mode),
            }
            if mode == "i2v" and image:
                out[target.image] = image
            return out

        outputs = [tab.about, target.prompt, target.extra, tab_set]
        outputs += [target.image] if target.image is not None else []
        return go, outputs

    for mode, button in (("t2v", tab.to_t2v), ("i2v", tab.to_i2v)):
        fn, outputs = send(mode)
        button.click(fn, [tab.refined, tab.meta, tab.prompt, tab.image], outputs, **events)

    for mode, gen in generate_tabs.items():
        _wire_inline(gen, mode, engine, refiner, tab)


def _wire_inline(gen, mode: str, engine: Engine, refiner: PromptRefiner, tab: RefineTab) -> None:
    """The Refine button beside a tab's prompt: the result appears below for the user to use or dismiss."""
    events = {"api_visibility": "private", "concurrency_limit": 4, "concurrency_id": "refine"}
    inputs = [gen.prompt, gen.image] if gen.image is not None else [gen.prompt]

    def refine(prompt, *rest):
        image = rest[0] if gen.image is not None else None
        backend, language, style = rest[-3:]
        try:
            result = run_refine(engine, refiner, prompt, image, backend, language, mode, style)
        except NotRefined as exc:  # said under the prompt, where the refinement would have appeared
            return gr.update(visible=False), gr.update(value=not_refined(exc), visible=True), gr.skip(), gr.skip()
        return (
            gr.update(value=result.text, visible=True),
            gr.update(value=describe(result), visible=True),
            gr.update(visible=True),
            {"meta": result.as_metadata(), "original": prompt},
        )

    gen.refine.click(
        refine, [*inputs, tab.backend, tab.language, gen.style],
        [gen.refined, gen.refined_about, gen.refined_row, gen.pending], **events,
    )  # fmt: skip

    def accept(text, pending):
        pending = pending or {}
        hide = gr.update(visible=False)
        return text, refined_extra(pending.get("meta"), pending.get("original", "")), hide, hide, hide

    gen.use_refined.click(
        accept, [gen.refined, gen.pending], [gen.prompt, gen.extra, gen.refined, gen.refined_about, gen.refined_row],
        **events,
    )  # fmt: skip
    hide = gr.update(visible=False)
    gen.dismiss_refined.click(
        lambda: (hide, hide, hide), None, [gen.refined, gen.refined_about, gen.refined_row], **events
    )

    panel = gen.variations

    def wordings(prompt, count, *rest):
        """N versions of the idea, one per line, for the user to edit: rules make other deterministic choices,
        an LLM samples anew each time. Duplicates are dropped and said."""
        image = rest[0] if gen.image is not None else None
        backend, language, style = rest[-3:]
        texts: list[str] = []
        results = []
        wanted = int(count or 2)
        try:
            for variant in range(wanted):
                result = run_refine(engine, refiner, prompt, image, backend, language, mode, style, variant)
                results.append(result)
                if result.text not in texts:
                    texts.append(result.text)
        except NotRefined as exc:
            return gr.skip(), gr.skip(), gr.skip(), not_refined(exc)
        made = f"Wrote {len(texts)} wordings with **{results[-1].backend}**"
        if len(texts) < wanted:
            made += f" ({wanted - len(texts)} came out the same as another and were left out)"
        fell_back = next((r.notice for r in results if r.fell_back and r.notice), None)
        note = made + ". Edit them, then Generate." + (f"  \n{fell_back}" if fell_back else "")
        return "\n".join(t.replace("\n", " ") for t in texts), "wordings", True, note

    panel.from_refiner.click(
        wordings, [gen.prompt, panel.count, *inputs[1:], tab.backend, tab.language, gen.style],
        [panel.wordings, panel.vary, panel.on, panel.refiner_note], **events,
    )  # fmt: skip


def build_refine_api(engine: Engine, refiner: PromptRefiner) -> None:
    """/refine_prompt(prompt, image=None, backend=..., language="en") -> (refined prompt, details)."""

    def refine_prompt(
        prompt: str, image: str | None = None, backend: str = refiner.config.backend, language: str = "en"
    ) -> tuple[str, dict]:
        """Refine a short idea into a Wan2.2 prompt (Image to Video style when an image is given)."""
        mode = "i2v" if image else "t2v"
        try:
            result = run_refine(engine, refiner, prompt, image, backend, language, mode)
        except NotRefined as exc:
            raise refuse(str(exc), "Can't refine") from None
        return result.text, result.as_metadata()

    with gr.Group(visible=False):
        inputs = [
            gr.Textbox(label="prompt"),
            picture_input(label="image"),
            gr.Textbox(label="backend", value=refiner.config.backend),
            gr.Textbox(label="language", value="en"),
        ]
        outputs = [gr.Textbox(label="refined prompt"), gr.JSON(label="details")]
        button = gr.Button("refine_prompt")
    button.click(refine_prompt, inputs, outputs, api_name="refine_prompt", concurrency_limit=4, concurrency_id="refine")
