"""The Gallery's Extend panel: continue the selected video (or one from the computer) window by window, and watch
the windows go by; the result lands in the Gallery like any video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from engine import (
    MAX_PASSES,
    Engine,
    GenerationRequest,
    ModelLoadError,
    ModelSpec,
    SavedVideo,
    StudioError,
    continues,
    find_by_sha256,
    find_video,
    overlaps,
    validate,
)

from .runs import Runs, Update, follow, shown, status_markdown

ADD_SECONDS = (1, 2, 3, 5, 8, 10, 15, 20, 30)


@dataclass
class ExtendPanel:
    open: gr.Button  # beside Reuse settings: opens the panel on the selected video
    box: gr.Group
    source: gr.State  # the path of the video to continue
    about: gr.Markdown
    upload: gr.File
    prompt: gr.Textbox
    frames: gr.Dropdown
    overlap: gr.Dropdown
    color: gr.Checkbox
    seed: gr.Number
    steps: gr.Number
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    preview: gr.Image
    video: gr.Video


def _spec(engine: Engine) -> ModelSpec | None:
    try:
        return engine.spec
    except ModelLoadError:
        return None


def add_choices(spec: ModelSpec, fps: float) -> list[tuple[str, int]]:
    """Frames to add, as seconds at the video's own frame rate: whole latent frames (4 each), within the limit."""
    most = (MAX_PASSES * spec.limits.frames[1] - 1) // 4 * 4
    counts = {min(most, max(4, round(seconds * fps / 4) * 4)) for seconds in ADD_SECONDS}
    counts.add(spec.window_frames - 1)
    return [(f"+{n / fps:.1f} s · {n} frames", n) for n in sorted(counts)]


def open_button() -> gr.Button:
    """Beside Reuse settings: opens the panel on the selected video."""
    return gr.Button("Extend…", interactive=False, elem_id="gallery-extend")


def build_extend(opener: gr.Button) -> ExtendPanel:
    """The panel, closed until `opener` is pressed (under the selected video in the Gallery)."""
    with gr.Group(visible=False, elem_id="extend-panel") as box:
        about = gr.Markdown("", elem_id="extend-about")
        upload = gr.File(
            label="…or continue a video from your computer", file_types=["video"], elem_id="extend-upload", height=90
        )
        prompt = gr.Textbox(
            label="What happens next",
            lines=3,
            info="One line per window, in order (the last line goes on); one line serves every window",
            elem_id="extend-prompt",
        )
        with gr.Row():
            frames = gr.Dropdown([], label="Add", elem_id="extend-frames", scale=2)
            overlap = gr.Dropdown(
                [1], value=1, label="Overlap (frames)", elem_id="extend-overlap", scale=1,
                info="Frames of the end each window starts from",
            )  # fmt: skip
        with gr.Row():
            color = gr.Checkbox(
                value=True, label="Match colours to the video (less drift)", elem_id="extend-color", scale=2
            )
            seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", scale=1)
            steps = gr.Number(value=None, precision=0, label="Steps", scale=1, elem_id="extend-steps")
        with gr.Row():
            run = gr.Button("Extend the video", variant="primary", elem_id="extend-run")
            stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="extend-stop")
        status = gr.Markdown("", elem_id="extend-status", elem_classes=["job-status"])
        preview = gr.Image(label="Live preview", interactive=False, height=200, buttons=[], elem_id="extend-preview")
        video = gr.Video(label="Extended video", interactive=False, height=260, elem_id="extend-video")
    return ExtendPanel(
        opener, box, gr.State(None), about, upload, prompt, frames, overlap, color, seed, steps, run, stop, status,
        preview, video,
    )  # fmt: skip


def _source_fields(engine: Engine, path: str, video: SavedVideo | None) -> dict[str, Any]:
    """What the panel shows for a source (read the way a job reads it): its name, frames and fps, the add and
    overlap choices."""
    spec = _spec(engine)
    if spec is None:
        return {"about": "No model is loaded: choose one in the Model menu at the top.", "ok": False}
    if not continues(spec):
        return {
            "about": f"**{spec.id} cannot continue a video:** it makes video from text only. Switch to TI2V-5B or "
            "I2V-A14B in the Model menu at the top.",
            "ok": False,
        }
    fps = float((video.request.get("fps") if video and video.settings else None) or spec.fps)
    try:
        valid = validate(GenerationRequest(prompt="-", video=path, frames=4), spec)
        fps = valid.source.fps
        frames, size = valid.source.frames, f"{valid.request.width}×{valid.request.height}"
    except StudioError as exc:  # in the user's words; said in the panel
        return {"about": f"**This video cannot be continued:** {exc}", "ok": False}
    return {
        "about": f"Continues **{Path(path).name}**: {frames} frames at {fps:g} fps, made at {size}. The result is "
        "this video followed by the new frames, saved as a new video.",
        "ok": True,
        "choices": add_choices(spec, fps),
        "default": spec.window_frames - 1,
        "steps": spec.steps,
        "overlaps": list(overlaps(spec, spec.window_frames)),
    }


def open_on(engine: Engine, path: str | None, video: SavedVideo | None) -> dict[str, Any]:
    """The panel's updates for a source path (the selected video, or an upload)."""
    if not path:
        return {"about": "Pick a video in the Gallery first, or upload one.", "ok": False}
    return _source_fields(engine, path, video)


def panel_updates(panel: ExtendPanel, fields: dict[str, Any], path: str | None, prompt: str | None) -> dict:
    out: dict[Any, Any] = {
        panel.box: gr.Group(visible=True),
        panel.about: fields["about"],
        panel.source: path if fields["ok"] else None,
        panel.run: gr.Button(interactive=fields["ok"]),
        panel.status: "",
    }
    if fields["ok"]:
        out[panel.frames] = gr.Dropdown(choices=fields["choices"], value=fields["default"])
        out[panel.overlap] = gr.Dropdown(choices=fields["overlaps"], value=1)
        out[panel.steps] = fields["steps"]
    if prompt is not None:
        out[panel.prompt] = prompt
    return out


def reuse_updates(panel: ExtendPanel, engine: Engine, video: SavedVideo) -> tuple[dict, str]:
    """Reuse settings of an extension: the panel filled in, on its source when the outputs folder still has it."""
    source = video.settings.get("source") or {}
    request = video.request
    found = find_by_sha256(engine.outputs, source.get("name"), source.get("sha256") or "")
    path = str(found.path) if found else None
    fields = open_on(engine, path, found)
    out = panel_updates(panel, fields, path, request.get("prompt", ""))
    if fields["ok"]:
        out[panel.frames] = gr.Dropdown(choices=fields["choices"], value=request.get("frames"))
        out[panel.overlap] = gr.Dropdown(choices=fields["overlaps"], value=request.get("overlap") or 1)
    out[panel.color] = bool(request.get("color_match", True))
    out[panel.seed] = request.get("seed", -1)
    out[panel.steps] = request.get("steps") or gr.skip()
    if found is None:
        note = (
            f"The source video {source.get('name')} (sha256 {str(source.get('sha256'))[:12]}…) is no longer in "
            "the outputs folder: upload it below to extend it again."
        )
    else:
        note = f"Settings filled in from the extension, on its source {found.path.name}."
    out[panel.status] = note
    return out, note


def wire_extend(
    panel: ExtendPanel, engine: Engine, runs: Runs, selected: gr.State, show: gr.Radio, refresh, listing_outputs
) -> None:
    """Open on the selected video or an upload; run with the engine's queue; the Gallery refreshes at the end."""
    private = {"api_visibility": "private", "concurrency_limit": None, "concurrency_id": "gallery"}

    def opened(path: str | None, prompt: str):
        video = find_video(engine.outputs, path)
        keep = prompt or (video.prompt.splitlines()[-1] if video and video.prompt.strip() else "")
        return panel_updates(panel, open_on(engine, path, video), path, keep)

    targets = [panel.box, panel.about, panel.source, panel.run, panel.status, panel.frames, panel.overlap, panel.steps]
    panel.open.click(opened, [selected, panel.prompt], [*targets, panel.prompt], **private)

    def uploaded(path: str | None, prompt: str):
        if not path:
            return {}
        return panel_updates(panel, open_on(engine, path, None), path, prompt)

    panel.upload.upload(uploaded, [panel.upload, panel.prompt], [*targets, panel.prompt], **private)

    def key_for(request: gr.Request) -> str:
        return f"{request.session_hash}:extend"

    def start(request: gr.Request):
        runs.arm(key_for(request))
        return gr.Button(interactive=False), gr.Button(interactive=True), "Submitting…"

    def extend(path, prompt, frames, overlap, color, seed, steps, show, request: gr.Request):
        if not path:
            yield {panel.status: status_markdown(Update("Not started: pick a video to continue first."))}
            return
        req = GenerationRequest(
            prompt=prompt or "",
            video=path,
            frames=frames,
            overlap=overlap,
            color_match=bool(color),
            seed=-1 if seed is None else seed,
            steps=steps if steps not in (None, "") else None,
            extra={"ui": {"tab": "extend"}},
        )
        for update in follow(engine, req, runs, key_for(request), raise_errors=False):
            out = shown(update, panel.status, panel.preview, panel.video)
            if update.video:  # the new video is in the Gallery at once
                out.update(dict(zip(listing_outputs, refresh(show), strict=True)))
            yield out

    def end():
        return gr.Button(interactive=True), gr.Button(interactive=False)

    controls = {"api_visibility": "private", "queue": False}
    begun = panel.run.click(start, None, [panel.run, panel.stop, panel.status], **controls)
    inputs = [panel.source, panel.prompt, panel.frames, panel.overlap, panel.color, panel.seed, panel.steps]
    ran = begun.then(
        extend,
        [*inputs, show],
        [panel.status, panel.preview, panel.video, *listing_outputs],
        api_visibility="private",
        concurrency_id="gpu",
        concurrency_limit=None,
        show_progress="minimal",
    )
    ran.then(end, None, [panel.run, panel.stop], **controls)
    ran.failure(end, None, [panel.run, panel.stop], **controls)

    def stop(request: gr.Request):
        running = runs.stop(key_for(request))
        return "Stopping: the job ends after the current step." if running else "Stopping before the job starts."

    panel.stop.click(stop, None, panel.status, api_visibility="private", queue=False)
