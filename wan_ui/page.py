"""The Studio page: header (model, state, device), the generation tabs, Prompt Refinement, Gallery, and the API."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gradio as gr

from engine import (
    Engine,
    Failed,
    Loading,
    ModelLoadError,
    ModelSpec,
    ModelState,
    PromptRefiner,
    Ready,
    builtin_specs,
    find_video,
    request_from_settings,
)

from .api import build_api
from .compare import COMPARE_CSS
from .extend_panel import reuse_updates
from .gallery_tab import build_gallery, describe, wire_gallery
from .generate_tab import GenerateTab, build_tab, counterpart, serves
from .progress import header_markdown, tiny_banner
from .refine_tab import build_refine_api, build_refine_tab, wire_refine
from .runs import Runs

CSS = (
    COMPARE_CSS
    + """
.needs-model { padding: 8px 12px; border-radius: 8px; background: var(--color-accent-soft); }
.job-status { min-height: 3em; }
#studio-header h1 { margin-bottom: 0; }
"""
)
# The weights' storage, chosen here or with --quantize; applied by reloading the model.
STORAGE_CHOICES = [
    ("As published (bf16)", "none"),
    ("int8: about half the memory", "int8"),
    ("fp8: half the memory, fp8 matmuls (RTX 40/50, H100…)", "fp8"),
]
STATUS_EVERY_S = 0.5  # the header (state, queue) keeps up with the status line
BUILT = "built:"  # `seen` before the page's first update: the model the page was built for
# In the browser, when the page's first update brings another model's defaults (the model was switched after the
# page was built): each control still holding the value it was built with takes the new default; one the user has
# already typed in keeps what was typed. It runs in the page, so no typing between request and reply is lost.
KEEP_TYPED_JS = """
(pending, ...current) => {
  if (!pending || !pending.now) return current;
  return current.map((value, i) =>
    JSON.stringify(value) === JSON.stringify(pending.built[i]) ? pending.now[i] : value);
}
"""


def model_choices(engine: Engine) -> list[tuple[str, str]]:
    """The catalog, and first the launch model when it is not in it (also when it failed: it shows what was asked
    for, and picking it again retries)."""
    found = [(spec.label, model_id) for model_id, spec in builtin_specs().items()]
    current = engine.state()
    if current.model not in builtin_specs():
        found.insert(0, (current.label, current.model))
    return found


def _spec(engine: Engine) -> ModelSpec | None:
    try:
        return engine.spec
    except ModelLoadError:
        return None


def build(
    engine: Engine,
    refiner: PromptRefiner | None = None,
    title: str = "Wan Studio",
    notice: str | None = None,
    queue_size: int = 16,
) -> gr.Blocks:
    """The whole page over one engine; `notice` is a warning shown above everything (an open share link)."""
    runs = Runs(max_waiting=queue_size)
    refiner = refiner or PromptRefiner(device=engine.device)
    with gr.Blocks(title=title, delete_cache=(1800, 3600)) as demo:
        with gr.Row(equal_height=True, elem_id="studio-header"):
            with gr.Column(scale=3):
                gr.Markdown(f"# {title}\nMake videos with Wan2.2 on your own GPU.")
            with gr.Column(scale=4):
                model = gr.Dropdown(
                    model_choices(engine), value=engine.state().model, label="Model", elem_id="model-select"
                )
            with gr.Column(scale=2):
                storage = gr.Dropdown(
                    STORAGE_CHOICES,
                    value=engine.weights.quantize,
                    label="Transformer weights",
                    info="Quantized weights fit 12-24 GB cards; the model reloads",
                    elem_id="quantize-select",
                )
        if notice:
            gr.Markdown(f"**Warning: {notice}**", elem_id="studio-notice")
        header = gr.Markdown(header_markdown(engine.state(), engine.queue_length()), elem_id="model-state")
        banner = gr.Markdown(tiny_banner(engine.state()), visible=engine.state().tiny, elem_id="tiny-banner")
        # the model the page's controls were built for: the first update leaves them alone when it is still the one
        # loaded, so nothing typed before that update arrives is overwritten by a default
        seen = gr.State(f"{BUILT}{_page_key(engine)}")
        defaults = gr.JSON(None, visible="hidden", elem_id="pending-defaults")  # KEEP_TYPED_JS's input
        with gr.Tabs() as tabs:
            with gr.Tab("Text to Video", id="t2v"):
                t2v = build_tab("t2v", engine, runs, _spec(engine))
            with gr.Tab("Image to Video", id="i2v"):
                i2v = build_tab("i2v", engine, runs, _spec(engine))
            with gr.Tab("Prompt Refinement", id="refine"):
                refine = build_refine_tab(refiner)
            with gr.Tab("Gallery", id="gallery") as gallery_tab:
                gallery = build_gallery(engine)
        build_api(engine, runs)
        build_refine_api(engine, refiner)
        generate_tabs = {"t2v": t2v, "i2v": i2v}
        _wire_models(demo, engine, model, header, banner, seen, generate_tabs, storage, defaults)
        wire_gallery(gallery, engine, gallery_tab, runs)
        wire_refine(refine, engine, refiner, generate_tabs, tabs)
        _wire_reuse(engine, gallery, generate_tabs, tabs)

    return demo


def _page_key(engine: Engine, state: ModelState | None = None) -> str:
    """Which model the page's controls are set for, and whether it can run (a failed one turns Generate off)."""
    state = state or engine.state()
    failed = state.state == "failed" and engine.pipeline is None  # a model that cannot load: nothing to run
    return f"{state.model}|{'unusable' if failed else 'usable'}"


def _model_outputs(tabs: dict[str, GenerateTab]) -> list[Any]:
    return [c for tab in tabs.values() for c in tab.model_outputs]


def _wire_models(
    demo, engine: Engine, model, header, banner, seen, tabs: dict[str, GenerateTab], storage, defaults
) -> None:
    controls = {"api_visibility": "private", "queue": False}  # status keeps coming when the queue is full
    outputs = [header, banner, model, storage, seen, *_model_outputs(tabs)]

    def page_state(last_seen: str | None, force: bool = False) -> dict[Any, Any]:
        state = engine.state()
        out: dict[Any, Any] = {
            header: header_markdown(state, engine.queue_length()),
            banner: gr.update(value=tiny_banner(state), visible=state.tiny),
        }
        spec = _spec(engine)
        key = _page_key(engine, state)
        failed = key.endswith("|unusable")
        if not force and (last_seen or "").startswith(BUILT):  # the first update (first_state) has not come yet
            return out
        if force or key != last_seen:
            out[seen] = key
            out[storage] = gr.update(value=engine.weights.quantize)
            if spec is not None:
                out[model] = gr.update(choices=model_choices(engine), value=spec.id)
                for tab in tabs.values():
                    out.update(tab.model_updates(spec, engine))
            if failed:
                for tab in tabs.values():
                    out.update(tab.unusable_updates())
        return out

    typed = [c for tab in tabs.values() for c in tab.typed_controls]
    built = [c.value for c in typed]  # what the page starts with, before anything is typed

    def first_state(marker: str) -> dict[Any, Any]:
        """The page's first update: nothing for the controls when the page was built for the loaded model; else
        the new model's defaults, whose values go through KEEP_TYPED_JS so that nothing typed is overwritten."""
        built_for = marker.removeprefix(BUILT)
        out = page_state(built_for)
        if seen not in out:
            out[seen] = built_for
            if built_for.endswith("|unusable"):  # built when the model had failed: still so
                for tab in tabs.values():
                    out.update(tab.unusable_updates())
            return out
        now = []
        for control, value in zip(typed, built, strict=True):
            update = out.get(control)
            if isinstance(update, dict) and "value" in update:
                update = dict(update)
                now.append(update.pop("value"))
                out[control] = update
            else:
                now.append(value)
        out[defaults] = {"built": built, "now": now}
        return out

    demo.load(first_state, seen, [*outputs, defaults], **controls)
    defaults.change(None, [defaults, *typed], typed, js=KEEP_TYPED_JS, **controls)
    gr.Timer(STATUS_EVERY_S).tick(page_state, seen, outputs, show_progress="hidden", **controls)

    def follow(job, what: str, last_seen: str | None):
        for event in job.events():
            if isinstance(event, Loading):
                yield {header: f"{what} · {event.fraction:.0%} · {event.message}"}
            elif isinstance(event, Failed):  # said once, in the header, until the next choice
                yield page_state(last_seen, force=True)
            elif isinstance(event, Ready):
                yield page_state(last_seen, force=True)

    def switch(target: str, last_seen: str | None):
        if not target:
            yield page_state(last_seen)
            return
        yield from follow(engine.load_model(target), f"Switching to **{target}**", last_seen)

    def requantize(kind: str, last_seen: str | None):
        if kind == engine.weights.quantize:
            yield page_state(last_seen)
            return
        job = engine.load_model(weights=replace(engine.weights, quantize=kind))
        yield from follow(job, f"Reloading with **{kind}** transformer weights", last_seen)

    gpu = {"api_visibility": "private", "concurrency_limit": 1, "concurrency_id": "model", "show_progress": "minimal"}
    model.input(switch, [model, seen], outputs, **gpu)
    storage.input(requantize, [storage, seen], outputs, **gpu)

    def switch_for(mode: str):
        def switch_tab(last_seen: str | None):  # a generator function, so Gradio streams its updates
            yield from switch(_switch_target(engine, mode), last_seen)

        return switch_tab

    for mode, tab in tabs.items():
        tab.switch.click(switch_for(mode), seen, outputs, **gpu)


def _switch_target(engine: Engine, mode: str) -> str:
    spec = _spec(engine)
    other = counterpart(mode, spec) if spec is not None else None
    return other.id if other else ""


def _wire_reuse(engine: Engine, gallery, tabs: dict[str, GenerateTab], tab_set: gr.Tabs) -> None:
    targets = [tab_set, gallery.about]
    for tab in tabs.values():
        targets += [tab.prompt, tab.style_words, tab.style, tab.negative, tab.width, tab.height, tab.size]
        targets += [tab.frames, tab.duration, tab.fps, tab.steps, tab.quality, tab.guidance, tab.guidance_2]
        targets += [tab.shift, tab.seed, tab.randomize, tab.extra, tab.status, *tab.lora_controls]

    panel = gallery.extend
    targets += [panel.box, panel.about, panel.source, panel.run, panel.status, panel.frames, panel.overlap]
    targets += [panel.prompt, panel.color, panel.seed, panel.steps]

    def reuse(path: str | None):
        video = find_video(engine.outputs, path)
        if video is None or not video.settings:  # said in the Gallery, beside the button
            return {gallery.about: "**Nothing to reuse:** pick a video made by Wan Studio first."}
        if video.settings.get("source"):  # an extension: its panel, on its source
            out, note = reuse_updates(panel, engine, video)
            out[gallery.about] = f"{describe(video)}\n\n{note}"
            return out
        request = request_from_settings(video.settings).settings()
        mode = "i2v" if video.from_image else "t2v"
        spec = _spec(engine)
        tab = tabs[mode]
        listing = engine.list_loras()
        out = tab.fill(request, spec, listing) if spec is not None else {}
        note = "Settings filled in from the video."
        if missing := tab.missing_loras(request, listing):
            note += (
                f" The LoRA folder no longer has {', '.join(missing)}: put the file back or remove it from the LoRAs."
            )
        if mode == "i2v":
            note += " Add the image again: the picture itself is not stored with the video."
        if spec is not None and video.model != spec.id:
            note += f" It was made with {video.model}; the studio now runs {spec.id}."
        if spec is not None and not serves(mode, spec):
            note += " Switch model above to generate it here."
        out[tab.status] = note
        out[tab_set] = gr.Tabs(selected=mode)
        return out

    gallery.reuse.click(
        reuse, gallery.selected, targets, api_visibility="private", concurrency_limit=None, concurrency_id="gallery"
    )
