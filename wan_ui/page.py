"""A minimal text/image-to-video page over the engine: prompt in, live preview and progress, video out."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from engine import Cancelled, Done, Engine, Failed, GenerationRequest, Loading, Preview, Step, StudioError


def _status(event) -> str | None:
    if isinstance(event, Loading):
        return f"Loading model: {event.message} ({event.fraction:.0%})"
    if isinstance(event, Step):
        eta = "" if event.eta is None else f", about {event.eta:.0f} s left"
        return f"{event.phase}: step {event.index}/{event.total}, {event.elapsed:.0f} s{eta}"
    if isinstance(event, Done):
        return f"Done in {event.timings.get('total', 0):.1f} s, seed {event.seed}: {event.path}"
    if isinstance(event, (Failed, Cancelled)):
        return event.message
    return None


def build(engine: Engine) -> gr.Blocks:
    state = engine.state()
    with gr.Blocks(title="Wan Studio") as demo:
        gr.Markdown(f"# Wan Studio\nModel: **{state.label}** on {state.device}")
        if state.tiny:
            gr.Markdown(
                "The tiny offline model has random weights: its output is noise. "
                "Run `python app.py --model ti2v-5b` on a GPU for real videos."
            )
        prompt = gr.Textbox(label="Prompt", lines=3)
        image = gr.Image(label="Image (optional)", type="pil")
        seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0)
        run = gr.Button("Generate", variant="primary")
        status = gr.Markdown()
        preview = gr.Image(label="Preview", interactive=False)
        video = gr.Video(label="Video", interactive=False)

        def generate(text: str, picture, seed_value) -> Iterator[tuple]:
            try:
                job = engine.submit(GenerationRequest(prompt=text, image=picture, seed=int(seed_value)))
            except StudioError as exc:
                raise gr.Error(str(exc)) from None
            for event in job.events(latest_preview_only=True):
                line = _status(event)
                if isinstance(event, Preview):
                    yield gr.update(), event.frames[len(event.frames) // 2], gr.update()
                elif isinstance(event, Done):
                    yield line, gr.update(), event.path
                elif line is not None:
                    yield line, gr.update(), gr.update()

        run.click(generate, [prompt, image, seed], [status, preview, video], concurrency_id="gpu")
    return demo
