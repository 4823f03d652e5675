"""The Text to Video and Image to Video tabs: one builder, two modes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine import (
    Engine,
    GenerationRequest,
    ModelLoadError,
    ModelSpec,
    RequestError,
    builtin_specs,
    plan_takes,
    wordings,
)

from . import choices, lora_picker, variations_panel
from .inputs import picture_input
from .runs import Runs, Update, follow, follow_batch, shown, status_markdown
from .variations_panel import VariationsPanel

TAB_NAMES = {"t2v": "Text to Video", "i2v": "Image to Video"}
SIZE_INFO = {
    "t2v": "",
    "i2v": "Image to Video keeps the image's shape at this area (as near as the model's sizes allow)",
}


def serves(mode: str, spec: ModelSpec) -> bool:
    return spec.text_to_video if mode == "t2v" else spec.accepts_image


def counterpart(mode: str, spec: ModelSpec) -> ModelSpec | None:
    """The catalog model to offer when the loaded one can't serve this tab: same kind (tiny or real), MoE first."""
    candidates = [s for s in builtin_specs().values() if serves(mode, s) and s.tiny == spec.tiny]
    candidates.sort(key=lambda s: (s.moe != spec.moe, s.id))
    return candidates[0] if candidates else None


@dataclass
class GenerateTab:
    mode: str
    needs: gr.Markdown
    switch: gr.Button
    image: gr.Image | None
    last_image: gr.Image | None  # I2V-A14B only: first and last frame
    prompt: gr.Textbox
    size: gr.Dropdown
    duration: gr.Dropdown
    quality: gr.Radio
    style: gr.Dropdown
    style_words: gr.Textbox
    negative: gr.Textbox
    steps: gr.Slider
    guidance: gr.Slider
    guidance_2: gr.Slider
    shift: gr.Slider
    frames: gr.Slider
    fps: gr.Slider
    width: gr.Number
    height: gr.Number
    seed: gr.Number
    randomize: gr.Checkbox
    generate: gr.Button
    stop: gr.Button
    status: gr.Markdown
    preview: gr.Image
    video: gr.Video
    settings: gr.JSON
    extra: gr.State  # metadata to keep with the next video (the refiner's output), set by the refine wiring
    refine: gr.Button
    refined: gr.Textbox
    refined_about: gr.Markdown
    refined_row: gr.Row
    use_refined: gr.Button
    dismiss_refined: gr.Button
    pending: gr.State  # the refinement shown but not yet accepted
    loras: lora_picker.LoraPicker
    variations: VariationsPanel

    @property
    def lora_controls(self) -> list[Any]:
        return [self.loras.menu, self.loras.strengths, self.loras.about]

    @property
    def request_inputs(self) -> list[Any]:
        fields = [self.prompt, self.style_words, self.negative, self.width, self.height, self.frames, self.fps]
        fields += [self.steps, self.guidance, self.guidance_2, self.shift, self.seed, self.randomize, self.extra]
        return [*fields, self.loras.strengths]  # after the image (a None State on the Text to Video tab)

    @property
    def model_outputs(self) -> list[Any]:
        return [
            self.needs,
            self.switch,
            self.size,
            self.duration,
            self.quality,
            self.negative,
            self.steps,
            self.guidance,
            self.guidance_2,
            self.shift,
            self.frames,
            self.fps,
            self.width,
            self.height,
            self.generate,
            *self.lora_controls,
            *([self.last_image] if self.last_image is not None else []),
        ]

    @property
    def typed_controls(self) -> list[Any]:
        """The model-dependent controls a user types or picks in: a default never overwrites what was typed there."""
        names = ("size", "duration", "quality", "negative", "steps", "guidance", "guidance_2", "shift", "frames")
        names += ("fps", "width", "height", "loras.menu", "loras.strengths")
        return [self.control(name) for name in names]

    def model_updates(self, spec: ModelSpec, engine: Engine) -> dict[Any, Any]:
        """Every control that depends on the model, set to that model's choices and defaults."""
        settings = model_settings(self.mode, spec, engine)
        return {self.control(name): gr.update(**kwargs) for name, kwargs in settings.items()}

    def control(self, name: str) -> Any:
        """A control by its name in model_settings ("steps", or "loras.menu")."""
        part, _, inner = name.partition(".")
        return getattr(getattr(self, part), inner) if inner else getattr(self, part)

    def unusable_updates(self) -> dict[Any, Any]:
        """No model can run (the launch model failed): Generate off, and the menus say why until one is chosen."""
        why = "No working model is loaded: choose one in the Model menu at the top."
        return {
            self.generate: gr.update(interactive=False),
            self.size: gr.update(choices=[], value=None, info=why),
            self.duration: gr.update(choices=[], value=None, info=why),
        }

    def fill(self, request: dict[str, Any], spec: ModelSpec, listing: list[dict[str, Any]]) -> dict[Any, Any]:
        """Controls set from a saved video's request (Gallery's Reuse settings); listing: engine.list_loras()."""
        words = ((request.get("extra") or {}).get("ui") or {}).get("style_words", "")
        prompt = ((request.get("extra") or {}).get("ui") or {}).get("user_prompt", request.get("prompt", ""))
        steps = request.get("steps", spec.steps)
        size = choices.size_value(request.get("width", spec.width), request.get("height", spec.height))
        known_sizes = [v for _, v in choices.size_choices(spec)]
        updates = {
            self.prompt: prompt,
            self.style_words: words,
            self.style: next((s for s in choices.STYLES if words and choices.style_words(s) == words), "none"),
            self.negative: request.get("negative_prompt", spec.negative_prompt),
            self.width: request.get("width", spec.width),
            self.height: request.get("height", spec.height),
            self.size: size if size in known_sizes else None,
            self.frames: request.get("frames", spec.frames),
            self.duration: request.get("frames", spec.frames),
            self.fps: request.get("fps", spec.fps),
            self.steps: steps,
            self.quality: choices.quality_for_steps(spec, steps),
            self.guidance: request.get("guidance", spec.guidance),
            self.shift: request.get("shift", spec.shift),
            self.seed: request.get("seed", -1),
            self.randomize: False,
            self.extra: {k: v for k, v in (request.get("extra") or {}).items() if k != "ui"},
        }
        if request.get("guidance_2") is not None:
            updates[self.guidance_2] = request["guidance_2"]
        names = lora_picker.names_in(request.get("loras"))
        updates[self.loras.menu] = gr.update(choices=lora_picker.menu_choices(listing, names), value=names)
        updates[self.loras.strengths] = request.get("loras") or ""
        updates[self.loras.about] = lora_picker.about(listing, names)
        return updates

    @staticmethod
    def missing_loras(request: dict[str, Any], listing: list[dict[str, Any]]) -> list[str]:
        """LoRAs a saved video used that the library (engine.list_loras()) no longer has (Reuse says so)."""
        known = {item["name"] for item in listing if item["usable"]}
        return [n for n in lora_picker.names_in(request.get("loras")) if n not in known]


def model_settings(mode: str, spec: ModelSpec, engine: Engine) -> dict[str, dict[str, Any]]:
    """The model-dependent controls' settings (value, choices, bounds, visibility) as keyword arguments, the LoRA
    picker's included: the page is built with them, so it shows the launch model's defaults before it is interactive,
    and a model switch sends the same ones as updates."""
    ok = serves(mode, spec)
    other = None if ok else counterpart(mode, spec)
    need = (
        f"**{TAB_NAMES[mode]} needs another model.** {spec.label} can't make "
        f"{'videos from text alone' if mode == 't2v' else 'videos from an image'}."
    )
    lim = spec.limits
    frames_low = lim.frames[0] + (1 - lim.frames[0]) % 4
    return {
        "needs": dict(value=need, visible=not ok),
        "switch": dict(value=f"Switch to {other.id}" if other else "", visible=other is not None),
        "size": dict(
            choices=choices.size_choices(spec), value=choices.size_value(spec.width, spec.height), info=SIZE_INFO[mode]
        ),
        "duration": dict(choices=choices.duration_choices(spec), value=spec.frames, info=choices.duration_info(spec)),
        "quality": dict(value="standard"),
        "negative": dict(value=spec.negative_prompt),
        "steps": dict(minimum=lim.steps[0], maximum=lim.steps[1], value=spec.steps),
        "guidance": dict(minimum=lim.guidance[0], maximum=lim.guidance[1], value=spec.guidance),
        "guidance_2": dict(
            minimum=lim.guidance[0],
            maximum=lim.guidance[1],
            value=spec.guidance_2 if spec.guidance_2 is not None else spec.guidance,
            visible=spec.moe,
        ),
        "shift": dict(minimum=lim.shift[0], maximum=lim.shift[1], value=spec.shift),
        "frames": dict(minimum=frames_low, maximum=choices.longest_frames(spec), value=spec.frames),
        "fps": dict(minimum=lim.fps[0], maximum=lim.fps[1], value=spec.fps),
        "width": dict(value=spec.width),
        "height": dict(value=spec.height),
        "generate": dict(interactive=ok),
        **lora_picker.model_settings(engine, spec),
        **({"last_image": dict(visible=spec.family == "i2v")} if mode == "i2v" else {}),
    }


def _number(value: Any) -> Any:
    return None if value is None or value == "" else value


def build_tab(mode: str, engine: Engine, runs: Runs, spec: ModelSpec | None) -> GenerateTab:
    """Lay out one generation tab and wire its events (inside an open gr.Tab)."""
    base = spec or builtin_specs()["tiny-ti2v"]
    made = model_settings(mode, spec, engine) if spec is not None else {}

    def at(name: str, **kwargs: Any) -> dict[str, Any]:  # a control's own arguments, then the model's settings
        return {**kwargs, **made.get(name, {})}

    with gr.Row(visible=True):
        needs = gr.Markdown(**at("needs", visible=False, elem_classes=["needs-model"], elem_id=f"{mode}-needs"))
        switch = gr.Button(
            **at("switch", visible=False, size="sm", variant="secondary", scale=0, elem_id=f"{mode}-switch")
        )
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            image = last_image = None
            if mode == "i2v":
                with gr.Row(equal_height=True):
                    image = picture_input(
                        label="Image to animate (required)",
                        sources=["upload", "clipboard"],
                        height=280,
                        elem_id=f"{mode}-image",
                        scale=3,
                    )
                    last_image = picture_input(
                        **at(
                            "last_image",
                            label="Last frame (optional): the video ends on this picture",
                            sources=["upload", "clipboard"],
                            height=280,
                            elem_id=f"{mode}-last-image",
                            scale=2,
                            visible=False,
                        )
                    )
            with gr.Row(equal_height=False):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=4,
                    max_lines=12,
                    placeholder=(
                        "Describe the scene and the motion: who or what, doing what, where; the camera and the light."
                        if mode == "t2v"
                        else "Describe the motion you want to see in the picture: what moves, how, and the camera."
                    ),
                    elem_id=f"{mode}-prompt",
                    scale=6,
                )
                refine = gr.Button("Refine", scale=0, min_width=110, size="md", elem_id=f"{mode}-refine")
            refined = gr.Textbox(
                label="Refined prompt (edit, then use it)", lines=5, visible=False, elem_id=f"{mode}-refined"
            )
            refined_about = gr.Markdown(visible=False)
            with gr.Row(visible=False) as refined_row:
                use_refined = gr.Button(
                    "Use refined prompt", variant="primary", size="sm", elem_id=f"{mode}-use-refined"
                )
                dismiss_refined = gr.Button("Keep mine", size="sm")
            with gr.Row():
                size = gr.Dropdown(**at("size", label="Size", info=SIZE_INFO[mode] or None, scale=2))
                duration = gr.Dropdown(**at("duration", label="Duration", scale=2))
            with gr.Row():
                quality = gr.Radio(
                    [*choices.QUALITIES, (lora_picker.FAST_LABEL, lora_picker.FAST)],
                    **at("quality", value="standard", label="Quality (steps)", scale=2, elem_id=f"{mode}-quality"),
                )
                style = gr.Dropdown(choices.style_choices(), value="none", label="Style", scale=2)
            style_words = gr.Textbox(
                label="Style words (added to the end of the prompt)",
                lines=1,
                placeholder="none",
                elem_id=f"{mode}-style",
            )
            loras = lora_picker.build(mode, at)
            with gr.Accordion("Advanced", open=False, elem_id=f"{mode}-advanced"):
                negative = gr.Textbox(
                    **at(
                        "negative",
                        label="Negative prompt (what to avoid)",
                        lines=2,
                        max_lines=6,
                        elem_id=f"{mode}-negative",
                    )
                )
                with gr.Row():
                    steps = gr.Slider(
                        **at("steps", minimum=1, maximum=100, step=1, label="Steps", elem_id=f"{mode}-steps")
                    )
                    shift = gr.Slider(**at("shift", minimum=0.5, maximum=20, step=0.5, label="Shift (noise schedule)"))
                with gr.Row():
                    guidance = gr.Slider(
                        **at("guidance", minimum=0, maximum=20, step=0.5, label="Guidance", elem_id=f"{mode}-guidance")
                    )
                    guidance_2 = gr.Slider(
                        **at(
                            "guidance_2",
                            minimum=0,
                            maximum=20,
                            step=0.5,
                            label="Guidance, low-noise expert",
                            elem_id=f"{mode}-advanced-guidance-2",
                        )
                    )
                with gr.Row():
                    frames = gr.Slider(
                        **at("frames", minimum=1, maximum=241, step=4, label="Frames (4k+1)", elem_id=f"{mode}-frames")
                    )
                    fps = gr.Slider(**at("fps", minimum=1, maximum=60, step=1, label="Frames per second"))
                with gr.Row():
                    # no minimum here: the engine checks every number and says which and why in the status line
                    width = gr.Number(**at("width", label="Width", precision=0, elem_id=f"{mode}-width"))
                    height = gr.Number(**at("height", label="Height", precision=0, elem_id=f"{mode}-height"))
                with gr.Row():
                    seed = gr.Number(label="Seed", value=-1, precision=0, info="-1 picks one at random")
                    randomize = gr.Checkbox(label="New random seed each run", value=True)
            variation_controls = variations_panel.build_controls(mode)
            with gr.Row():
                generate = gr.Button("Generate", **at("generate", variant="primary", elem_id=f"{mode}-generate"))
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id=f"{mode}-stop")
        with gr.Column(scale=6):
            status = gr.Markdown("Ready when you are.", elem_id=f"{mode}-status", elem_classes=["job-status"])
            preview = gr.Image(
                label="Live preview", interactive=False, height=300, elem_id=f"{mode}-preview", buttons=[]
            )
            video = gr.Video(label="Video", interactive=False, height=360, elem_id=f"{mode}-video")
            with gr.Accordion("Settings of this video", open=False):
                settings = gr.JSON(label=None, elem_id=f"{mode}-settings")
            variation_results = variations_panel.build_results(mode)
    tab = GenerateTab(
        mode=mode,
        needs=needs,
        switch=switch,
        image=image,
        last_image=last_image,
        prompt=prompt,
        size=size,
        duration=duration,
        quality=quality,
        style=style,
        style_words=style_words,
        negative=negative,
        steps=steps,
        guidance=guidance,
        guidance_2=guidance_2,
        shift=shift,
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        seed=seed,
        randomize=randomize,
        generate=generate,
        stop=stop,
        status=status,
        preview=preview,
        video=video,
        settings=settings,
        refine=refine,
        refined=refined,
        refined_about=refined_about,
        refined_row=refined_row,
        use_refined=use_refined,
        dismiss_refined=dismiss_refined,
        extra=gr.State({}),
        pending=gr.State(None),
        loras=loras,
        variations=VariationsPanel(*variation_controls, *variation_results, gr.State([])),
    )
    _wire(tab, engine, runs, base)
    variations_panel.wire(tab.variations, engine)
    return tab


def _current_spec(engine: Engine) -> ModelSpec | None:
    try:
        return engine.spec
    except ModelLoadError:
        return None


def _wire(tab: GenerateTab, engine: Engine, runs: Runs, base: ModelSpec) -> None:
    private = {"api_visibility": "private", "queue": False}

    def spec_now() -> ModelSpec:
        return _current_spec(engine) or base

    def on_size(value):
        if not value:
            return gr.skip(), gr.skip()
        width, height = choices.parse_size(value)
        return width, height

    tab.size.input(on_size, tab.size, [tab.width, tab.height], **private)
    tab.duration.input(lambda n: n if n else gr.skip(), tab.duration, tab.frames, **private)
    tab.quality.input(lambda q: choices.quality_steps(spec_now(), q), tab.quality, tab.steps, **private)
    tab.style.input(choices.style_words, tab.style, tab.style_words, **private)
    lora_picker.wire(tab.loras, engine, spec_now, tab.quality)

    def key_for(request: gr.Request) -> str:
        return f"{request.session_hash}:{tab.mode}"

    def on_start(request: gr.Request):
        runs.arm(key_for(request))
        return (
            gr.Button(interactive=False),
            gr.Button(interactive=True),
            "Submitting…",
            None,
        )

    def on_generate(
        image,
        last_image,
        prompt,
        words,
        negative,
        width,
        height,
        frames,
        fps,
        steps,
        guidance,
        guidance_2,
        shift,
        seed,
        rand,
        extra,
        lora_text,
        several,
        count,
        vary,
        seed_mode,
        lines,
        request: gr.Request,
    ):
        spec = spec_now()
        if tab.mode == "i2v" and not image:
            yield {
                tab.status: status_markdown(
                    Update("Not started: Add an image to animate: Image to Video starts from your picture.")
                )
            }
            return
        ui_meta = {"tab": tab.mode, "user_prompt": prompt, "style_words": words}
        refined = (extra or {}).get("refined_prompt")
        if refined and refined.get("text") != prompt:
            ui_meta["edited_after_refining"] = True
        lora_text = (lora_text or "").strip() or None
        if lora_text:  # a field kept at the model's default takes the LoRAs' recommendation (the engine says so)
            steps, guidance, guidance_2, shift = (
                None if _number(v) == d else v
                for v, d in (
                    (steps, spec.steps),
                    (guidance, spec.guidance),
                    (guidance_2, spec.guidance if spec.guidance_2 is None else spec.guidance_2),
                    (shift, spec.shift),
                )
            )
        req = GenerationRequest(
            prompt=choices.compose_prompt(prompt, words),
            negative_prompt=negative,
            image=image,
            width=_number(width),
            height=_number(height),
            frames=_number(frames),
            fps=_number(fps),
            steps=_number(steps),
            guidance=_number(guidance),
            guidance_2=_number(guidance_2) if spec.moe else None,
            shift=_number(shift),
            seed=-1 if rand or _number(seed) is None else seed,
            extra={**(extra or {}), "ui": ui_meta},
            loras=lora_text,
            last_image=last_image or None,
        )
        if several:
            yield from run_takes(req, words, count, vary, seed_mode, lines, key_for(request))
            return
        for update in follow(engine, req, runs, key_for(request), raise_errors=False):
            out = shown(update, tab.status, tab.preview, tab.video)
            if update.video:
                out[tab.settings] = update.settings
            if update.seed is not None:
                out[tab.seed] = update.seed
            yield out

    def run_takes(req: GenerationRequest, words, count, vary, seed_mode, lines, key: str):
        """Several takes of the request: the grid fills as each finishes, the video shows the latest."""
        panel = tab.variations
        texts = "\n".join(choices.compose_prompt(t, words) for t in wordings(lines)) if vary != "seeds" else None
        try:
            takes = plan_takes(req, _number(count) if vary == "seeds" else None, texts, vary, seed_mode or "random")
        except RequestError as exc:
            message = str(exc)
            yield {tab.status: status_markdown(Update(f"Not started: {message[0].upper()}{message[1:]}"))}
            return
        yield {
            panel.grid: gr.Gallery(value=[], visible=True),
            panel.takes: [],
            panel.view: "",
            panel.compare: gr.Button(interactive=False, visible=True),
        }
        for update, done in follow_batch(engine, takes, runs, key, raise_errors=False):
            out: dict[Any, Any] = {tab.status: status_markdown(update)}
            if update.preview:
                out[tab.preview] = update.preview
            if done:
                out[panel.grid] = [
                    (t.video, variations_panel.caption(t.index, len(takes), t.seed, t.prompt)) for t in done
                ]
                out[panel.takes] = [t.video for t in done]
                out[panel.compare] = gr.Button(interactive=len(done) >= 2)
                out[tab.video] = done[-1].video
                out[tab.settings] = done[-1].settings
            yield out

    def on_end():
        ok = serves(tab.mode, spec_now()) and engine.state().state != "failed"
        return gr.Button(interactive=ok), gr.Button(interactive=False)

    def on_failure():
        # only when the page could not even hand the values over (the handler itself never raises)
        status = "**Not started:** the page could not send one of the values. Check the fields above and try again."
        return *on_end(), status

    def on_stop(request: gr.Request):
        running = runs.stop(key_for(request))
        return "Stopping: the job ends after the current step." if running else "Stopping before the job starts."

    panel = tab.variations
    outputs = [tab.status, tab.preview, tab.video, tab.settings, tab.seed]
    outputs += [panel.grid, panel.takes, panel.view, panel.compare]
    controls = {"api_visibility": "private", "concurrency_limit": None, "concurrency_id": "controls", "queue": False}
    start = tab.generate.click(on_start, None, [tab.generate, tab.stop, tab.status, tab.video], **controls)
    run = start.then(
        on_generate,
        [
            tab.image if tab.image is not None else gr.State(None),
            tab.last_image if tab.last_image is not None else gr.State(None),
            *tab.request_inputs,
            *tab.variations.inputs,
        ],
        outputs,
        api_visibility="private",
        concurrency_id="gpu",
        concurrency_limit=None,  # the engine's queue orders them and Runs bounds it
        show_progress="minimal",
    )
    run.then(on_end, None, [tab.generate, tab.stop], **controls)
    # a refused request (gr.Error) skips the .then() above in the browser: without this, Generate stays disabled
    run.failure(on_failure, None, [tab.generate, tab.stop, tab.status], **controls)
    tab.stop.click(on_stop, None, tab.status, api_visibility="private", queue=False)
