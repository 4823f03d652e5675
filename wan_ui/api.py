"""The stable public endpoints for gradio_client and scripts: /text_to_video, /image_to_video, /extend_video,
/variations, /stop, /list_loras.

They are separate from the page's own (private) events so the page can change without breaking scripts. The
parameter names are the function parameters below; None means the loaded model's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from engine import Engine, GenerationRequest, StudioError, plan_takes

from .inputs import number_input, picture_input
from .runs import Runs, follow, follow_batch, refuse

API_OUTPUTS = ("preview", "video", "seed", "status", "settings")
# the engine's request fields under their API parameter names, for messages about them
API_NAMES = {"frames": "num_frames", "guidance": "guidance_scale", "guidance_2": "guidance_scale_2"}


def _request(api: dict[str, Any]) -> GenerationRequest:
    """The engine's request from an endpoint's arguments, named as the API names them."""
    return GenerationRequest(
        prompt=api["prompt"] or "",
        negative_prompt=api["negative_prompt"] or None,
        image=api.get("image"),
        width=api.get("width"),
        height=api.get("height"),
        frames=api["num_frames"],
        fps=api.get("fps"),
        steps=api["steps"],
        guidance=api["guidance_scale"],
        guidance_2=api["guidance_scale_2"],
        shift=api["shift"],
        seed=-1 if api["seed"] is None else api["seed"],
        extra={"ui": {"tab": "api"}},
        loras=(api["loras"] or "").strip() or None,
        last_image=api.get("last_image") or None,
        video=api.get("video") or None,
        overlap=api.get("overlap"),
        color_match=api.get("color_match"),
    )


def build_api(engine: Engine, runs: Runs) -> None:
    """Hidden components and the two generation endpoints (call inside the open gr.Blocks)."""

    def stream(req: GenerationRequest, request: gr.Request) -> Iterator[tuple]:
        preview = None
        key = f"{request.session_hash}:api"
        runs.arm(key)  # a /stop sent while nothing ran must not stop this new call
        for update in follow(engine, req, runs, key, API_NAMES):
            preview = update.preview or preview
            yield preview, update.video, update.seed, update.status, update.settings

    def text_to_video(
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        shift: float | None = None,
        seed: int = -1,
        loras: str | None = None,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        """Make a video from text. Streams (preview, None, None, status, None), then (preview, video, seed, ...)."""
        yield from stream(_request(locals()), request)

    def image_to_video(
        image: str,
        prompt: str,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        shift: float | None = None,
        seed: int = -1,
        loras: str | None = None,
        last_image: str | None = None,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        """Animate an image. Streams like /text_to_video; the size follows the image's aspect at width x height.
        `last_image` (I2V-A14B) is the picture the video ends on."""
        if not image:
            raise refuse("Add an image to animate: image_to_video starts from a picture.", "Can't start this video")
        yield from stream(_request(locals()), request)

    def extend_video(
        video: str,
        prompt: str,
        negative_prompt: str | None = None,
        num_frames: int | None = None,
        overlap: int | None = None,
        color_match: bool | None = None,
        seed: int = -1,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        shift: float | None = None,
        loras: str | None = None,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        """Continue a video: `num_frames` new frames after its own, window by window (one prompt per line of
        `prompt` gives each window its own). Streams like /text_to_video; the result is the source, then the new
        frames, in one MP4 at the source's frame rate."""
        if not video:
            raise refuse("Add the video to continue: extend_video starts from a video.", "Can't start this video")
        yield from stream(_request(locals()), request)

    def variations(
        prompt: str = "",
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        num_frames: int | None = None,
        fps: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        shift: float | None = None,
        seed: int = -1,
        loras: str | None = None,
        image: str | None = None,
        count: int | None = None,
        prompts: str | None = None,
        vary: str | None = None,
        seeds: str = "random",
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        """Several takes in one call: `count` seeds of one prompt, or one take per line of `prompts` (one seed, so
        only the words differ; vary="both" gives each line its own seed). Streams (preview, [], status, []) with
        "2 of 4 done", then ends with every take's video and a list of {index, video, seed, prompt, settings}."""
        base = _request(locals())
        try:
            takes = plan_takes(base, count, prompts, vary or None, seeds or "random")
        except StudioError as exc:
            raise refuse(str(exc), "Can't start these takes") from None
        key = f"{request.session_hash}:api"
        runs.arm(key)
        for update, done in follow_batch(engine, takes, runs, key, API_NAMES):
            # only a new preview: a take's preview files are gone once the take ends
            preview = update.preview
            listing = [
                {"index": t.index, "video": t.video, "seed": t.seed, "prompt": t.prompt, "settings": t.settings}
                for t in done
            ]
            yield preview, [t.video for t in done], update.status, listing

    with gr.Group(visible=False):
        prompt = gr.Textbox(label="prompt")
        negative = gr.Textbox(label="negative_prompt (empty: the model's default)")
        numbers = [
            number_input(label=name, value=None)
            for name in ("width", "height", "num_frames", "fps", "steps", "guidance_scale", "guidance_scale_2", "shift")
        ]
        seed = number_input(label="seed (-1: random)", value=-1, precision=0)
        loras = gr.Textbox(label="loras (NAME, NAME:STRENGTH or NAME:HIGH:LOW, comma-separated; empty: none)")
        image = picture_input(label="image")
        last_image = picture_input(label="last_image")
        source = gr.File(label="video", file_types=["video"])
        overlap = number_input(label="overlap", value=None, precision=0)
        color_match = gr.Checkbox(label="color_match", value=True)
        outputs = [
            gr.Image(label="preview", type="filepath"),
            gr.Video(label="video"),
            gr.Number(label="seed used", precision=0),
            gr.Textbox(label="status"),
            gr.JSON(label="settings"),
        ]
        t2v = gr.Button("text_to_video")
        i2v = gr.Button("image_to_video")
        extend = gr.Button("extend_video")
        stop_button = gr.Button("stop")
        stop_status = gr.Textbox(label="status")
        list_button = gr.Button("list_loras")
        library = gr.JSON(label="loras")
        count = number_input(label="count (takes: 2-8)", value=None, precision=0)
        prompts = gr.Textbox(label="prompts (one wording per line)")
        vary = gr.Textbox(label="vary (seeds, wordings or both; empty: wordings when prompts are given)")
        seed_mode = gr.Textbox(label="seeds (random or consecutive)", value="random")
        batch_outputs = [
            gr.Image(label="preview", type="filepath"),
            gr.File(label="videos", file_count="multiple"),
            gr.Textbox(label="status"),
            gr.JSON(label="takes"),
        ]
        batch_button = gr.Button("variations")

    def list_loras() -> list[dict]:
        """The LoRA library: name, kind (file or pair), the models it fits, recommended settings, trigger words,
        whether it fits the loaded model and whether it is downloaded yet."""
        return engine.list_loras()

    def stop(request: gr.Request = None) -> str:
        """Stop this client's running or waiting generation (it ends after the current step; nothing is saved)."""
        if runs.stop(f"{request.session_hash}:api"):
            return "Stopping: the job ends after the current step."
        return "Nothing of yours is running."

    stop_button.click(stop, None, stop_status, api_name="stop", queue=False)  # Stop works even with a full queue
    common = {"concurrency_id": "gpu", "concurrency_limit": None, "show_progress": "hidden"}  # see Runs
    list_button.click(list_loras, None, library, api_name="list_loras", queue=False)
    t2v.click(text_to_video, [prompt, negative, *numbers, seed, loras], outputs, api_name="text_to_video", **common)
    i2v.click(
        image_to_video,
        [image, prompt, negative, *numbers, seed, loras, last_image],
        outputs,
        api_name="image_to_video",
        **common,
    )
    frames, steps, guidance, guidance_2, shift = (numbers[i] for i in (2, 4, 5, 6, 7))
    extend.click(
        extend_video,
        [source, prompt, negative, frames, overlap, color_match, seed, steps, guidance, guidance_2, shift, loras],
        outputs,
        api_name="extend_video",
        **common,
    )
    batch_button.click(
        variations,
        [prompt, negative, *numbers, seed, loras, image, count, prompts, vary, seed_mode],
        batch_outputs,
        api_name="variations",
        **common,
    )
