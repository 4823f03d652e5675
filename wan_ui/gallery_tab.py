"""The Gallery tab: every finished video in the outputs folder, newest first, and Reuse settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import gradio as gr

from engine import Engine, SavedVideo, find_video, list_videos

GALLERY_LIMIT = 200  # newest first; older videos stay on disk, only the page lists fewer


def caption(video: SavedVideo) -> str:
    prompt = video.prompt.strip() or "(no prompt)"
    short = prompt if len(prompt) <= 70 else prompt[:67].rstrip() + "…"
    return f"{short} · seed {video.seed}" if video.seed is not None else short


def describe(video: SavedVideo) -> str:
    when = dt.datetime.fromtimestamp(video.modified).strftime("%Y-%m-%d %H:%M")
    if not video.settings:
        return f"**{video.path.name}** · {when}\n\nThis file carries no Wan Studio settings, so it can't be reused."
    r = video.request
    size = f"{r.get('width')}×{r.get('height')}, {r.get('frames')} frames at {r.get('fps')} fps"
    source = "from an image" if video.from_image else "from text"
    return (
        f"**{video.path.name}** · {when} · {video.model} ({source})  \n"
        f"{size} · {r.get('steps')} steps · guidance {r.get('guidance')} · seed {r.get('seed')}\n\n"
        f"> {video.prompt}"
    )


@dataclass
class GalleryTab:
    refresh: gr.Button
    gallery: gr.Gallery
    chosen: gr.Video
    about: gr.Markdown
    settings: gr.JSON
    reuse: gr.Button
    paths: gr.State  # the listing the gallery shows, so a click maps to a file even after new videos arrive
    selected: gr.State


def build_gallery(engine: Engine) -> GalleryTab:
    with gr.Row():
        gr.Markdown(f"Videos in `{engine.outputs}`, newest first. They stay there when the studio restarts.")
        refresh = gr.Button("Refresh", size="sm", scale=0, elem_id="gallery-refresh")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Videos",
                columns=4,
                height=520,
                object_fit="contain",
                allow_preview=False,
                elem_id="gallery",
                interactive=False,
            )
        with gr.Column(scale=2):
            chosen = gr.Video(label="Selected video", interactive=False, height=280, elem_id="gallery-video")
            about = gr.Markdown("Pick a video to see how it was made.", elem_id="gallery-about")
            reuse = gr.Button("Reuse settings", variant="primary", interactive=False, elem_id="gallery-reuse")
            with gr.Accordion("All settings", open=False):
                settings = gr.JSON(label=None)
    tab = GalleryTab(refresh, gallery, chosen, about, settings, reuse, gr.State([]), gr.State(None))
    return tab


def listing(engine: Engine) -> tuple[list[tuple[str, str]], list[str]]:
    videos = list_videos(engine.outputs, limit=GALLERY_LIMIT)
    return [(str(v.path), caption(v)) for v in videos], [str(v.path) for v in videos]


def wire_gallery(tab: GalleryTab, engine: Engine, opened: gr.Tab) -> None:
    """Refresh on the button and whenever the Gallery tab is opened; a click shows that video's settings."""
    private = {"api_visibility": "private", "concurrency_limit": None, "concurrency_id": "gallery"}

    def refresh():
        return listing(engine)

    for trigger in (tab.refresh.click, opened.select):
        trigger(refresh, None, [tab.gallery, tab.paths], **private)

    def select(paths: list[str], evt: gr.SelectData):
        if evt.index is None or not (0 <= evt.index < len(paths)):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        path = paths[evt.index]
        video = find_video(engine.outputs, path)
        if video is None:
            return None, "That video is no longer in the outputs folder.", None, gr.Button(interactive=False), None
        return path, describe(video), video.settings, gr.Button(interactive=bool(video.settings)), path

    tab.gallery.select(select, tab.paths, [tab.chosen, tab.about, tab.settings, tab.reuse, tab.selected], **private)
