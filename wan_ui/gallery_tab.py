"""The Gallery tab: every finished video in the outputs folder, newest first with a batch's takes together; Reuse
settings, marks (kept / rejected), a batch's kept takes as a zip, and a side-by-side comparison."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from engine import (
    Engine,
    SavedVideo,
    StudioError,
    check_credentials,
    export_batch,
    find_video,
    in_batches,
    list_videos,
    set_mark,
)

from .compare import MAX_COMPARE, MIN_COMPARE, compare_html
from .extend_panel import ExtendPanel, build_extend, open_button, wire_extend
from .runs import Runs

GALLERY_LIMIT = 200  # newest first; older videos stay on disk, only the page lists fewer
FILTERS = [("All", "all"), ("Kept", "kept"), ("Rejected", "rejected"), ("Not marked", "none")]
MARK_SIGNS = {"kept": "✓ kept · ", "rejected": "✗ rejected · "}


def caption(video: SavedVideo) -> str:
    prompt = video.prompt.strip() or "(no prompt)"
    short = prompt if len(prompt) <= 70 else prompt[:67].rstrip() + "…"
    text = f"{short} · seed {video.seed}" if video.seed is not None else short
    if video.batch:
        text = f"take {video.batch.get('index')}/{video.batch.get('count')} · {text}"
    return MARK_SIGNS.get(video.mark or "", "") + text


def describe(video: SavedVideo) -> str:
    when = dt.datetime.fromtimestamp(video.modified).strftime("%Y-%m-%d %H:%M")
    if not video.settings:
        return f"**{video.path.name}** · {when}\n\nThis file carries no Wan Studio settings, so it can't be reused."
    r = video.request
    size = f"{r.get('width')}×{r.get('height')}, {r.get('frames')} frames at {r.get('fps')} fps"
    source = "from an image" if video.from_image else "from text"
    parts = [
        f"**{video.path.name}** · {when} · {video.model} ({source})  \n"
        f"{size} · {r.get('steps')} steps · guidance {r.get('guidance')} · seed {r.get('seed')}\n\n"
        f"> {video.prompt}"
    ]
    windows = video.settings.get("windows") or []
    source = video.settings.get("source")
    if source:
        parts.append(
            f"Extends **{source.get('name')}** ({source.get('frames')} frames) by {r.get('frames')} frames in "
            f"{len(windows)} window{'s' if len(windows) != 1 else ''}: {video.settings.get('total_frames')} frames."
        )
    elif windows:
        parts.append(f"A long video: {len(windows)} windows, each continuing from the one before.")
    if video.batch:
        b = video.batch
        parts.append(f"Take {b.get('index')} of {b.get('count')} of batch `{b.get('id')}` (varied: {b.get('varied')})")
    if video.mark:
        parts.append(f"Marked **{video.mark}**.")
    parts.append(f"**Content credentials:** {credentials(video)}")
    return "\n\n".join(parts)


def credentials(video: SavedVideo) -> str:
    """What the file's C2PA credentials say, and, when it was saved unsigned, why (from its settings)."""
    found = check_credentials(video.path)
    record = video.settings.get("credentials") or {}
    if found.status == "none" and record.get("signed") is False and record.get("reason"):
        return f"none: this video was saved unsigned ({record['reason']})."
    return found.summary


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
    show: gr.Radio  # which marks to list
    keep: gr.Button
    reject: gr.Button
    unmark: gr.Button
    export: gr.Button
    exported: gr.File
    check: gr.File  # any MP4 dropped here has its credentials read
    checked: gr.Markdown
    pick: gr.Dropdown  # 2-4 videos to compare
    compare: gr.Button
    view: gr.HTML
    extend: ExtendPanel


def build_gallery(engine: Engine) -> GalleryTab:
    with gr.Row():
        gr.Markdown(
            f"Videos in `{engine.outputs}`, newest first, the takes of a batch together. They stay there when the "
            "studio restarts."
        )
        show = gr.Radio(FILTERS, value="all", label="Show", scale=0, min_width=360, elem_id="gallery-filter")
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
            with gr.Row():
                reuse = gr.Button("Reuse settings", variant="primary", interactive=False, elem_id="gallery-reuse")
                opener = open_button()
            extend = build_extend(opener)
            with gr.Row():
                keep = gr.Button("✓ Keep", size="sm", interactive=False, elem_id="gallery-keep")
                reject = gr.Button("✗ Reject", size="sm", interactive=False, elem_id="gallery-reject")
                unmark = gr.Button("Clear mark", size="sm", interactive=False, elem_id="gallery-unmark")
            export = gr.Button(
                "Export the batch's kept takes (zip)", size="sm", interactive=False, elem_id="gallery-export"
            )
            exported = gr.File(label="Export", visible=False, elem_id="gallery-exported")
            with gr.Accordion("All settings", open=False):
                settings = gr.JSON(label=None)
            check = gr.File(
                label="Check a video: drop any MP4 to read its content credentials",
                file_types=[".mp4"],
                elem_id="gallery-check",
            )
            checked = gr.Markdown("", elem_id="gallery-checked")
    with gr.Row():
        pick = gr.Dropdown(
            [],
            multiselect=True,
            max_choices=MAX_COMPARE,
            label=f"Compare {MIN_COMPARE}-{MAX_COMPARE} videos side by side",
            scale=4,
            elem_id="gallery-compare-pick",
        )
        compare = gr.Button("Compare", scale=0, elem_id="gallery-compare")
    view = gr.HTML("", elem_id="gallery-compare-view")
    return GalleryTab(
        refresh, gallery, chosen, about, settings, reuse, gr.State([]), gr.State(None),
        show, keep, reject, unmark, export, exported, check, checked, pick, compare, view, extend,
    )  # fmt: skip


def listing(engine: Engine, show: str = "all") -> tuple[list[tuple[str, str]], list[str]]:
    videos = in_batches(list_videos(engine.outputs, limit=GALLERY_LIMIT))
    if show != "all":
        videos = [v for v in videos if (v.mark or "none") == show]
    return [(str(v.path), caption(v)) for v in videos], [str(v.path) for v in videos]


def wire_gallery(tab: GalleryTab, engine: Engine, opened: gr.Tab, runs: Runs) -> None:
    """Refresh on the button and whenever the Gallery tab is opened; a click shows that video's settings."""
    private = {"api_visibility": "private", "concurrency_limit": None, "concurrency_id": "gallery"}

    def refresh(show: str):
        items, paths = listing(engine, show)
        choices = [(label, path) for path, label in items]
        return items, paths, gr.Dropdown(choices=choices)

    for trigger in (tab.refresh.click, opened.select, tab.show.change):
        trigger(refresh, tab.show, [tab.gallery, tab.paths, tab.pick], **private)

    chosen_outputs = [tab.chosen, tab.about, tab.settings, tab.reuse, tab.selected, tab.keep, tab.reject, tab.unmark]
    chosen_outputs += [tab.export, tab.exported, tab.extend.open]

    def shown(video: SavedVideo | None, path: str | None, message: str = "") -> tuple:
        if video is None:
            off = gr.Button(interactive=False)
            gone = message or "That video is no longer in the outputs folder."
            return None, gone, None, off, None, off, off, off, off, gr.File(visible=False), off
        usable = gr.Button(interactive=bool(video.settings))
        about = describe(video) + (f"\n\n{message}" if message else "")
        return (
            path, about, video.settings, usable, path, usable, usable, usable,
            gr.Button(interactive=bool(video.batch)), gr.File(visible=False), gr.Button(interactive=True),
        )  # fmt: skip

    def select(paths: list[str], evt: gr.SelectData):
        if evt.index is None or not (0 <= evt.index < len(paths)):
            return (gr.skip(),) * len(chosen_outputs)
        path = paths[evt.index]
        return shown(find_video(engine.outputs, path), path)

    tab.gallery.select(select, tab.paths, chosen_outputs, **private)

    def marker(mark: str | None):
        def apply(path: str | None, show: str):
            try:
                video = set_mark(engine.outputs, path, mark)
            except StudioError as exc:
                return *shown(None, None, str(exc)), *refresh(show)
            return *shown(video, str(video.path)), *refresh(show)

        return apply

    listing_outputs = [tab.gallery, tab.paths, tab.pick]
    for button, mark in ((tab.keep, "kept"), (tab.reject, "rejected"), (tab.unmark, None)):
        button.click(marker(mark), [tab.selected, tab.show], chosen_outputs + listing_outputs, **private)

    def export(path: str | None):
        video = find_video(engine.outputs, path)
        if video is None or not video.batch:
            return gr.File(visible=False), "Pick a take of a batch to export its kept takes."
        try:
            target = export_batch(engine.outputs, video.batch["id"], engine.outputs / "exports")
        except StudioError as exc:
            return gr.File(visible=False), describe(video) + f"\n\n**Not exported:** {exc}"
        return gr.File(value=str(target), visible=True), describe(video) + f"\n\nExported `{target.name}`."

    tab.export.click(export, tab.selected, [tab.exported, tab.about], **private)

    def compare(paths: list[str] | None):
        videos = [v for p in (paths or []) if (v := find_video(engine.outputs, p)) is not None]
        return compare_html(videos)

    tab.compare.click(compare, tab.pick, tab.view, **private)

    def check(path: str | None):
        """Say what the dropped file's credentials mean, and empty the drop zone so the next file goes straight in."""
        if not path:
            return gr.skip(), None
        return f"**Credentials check of {Path(path).name}:** {check_credentials(path).summary}", None

    tab.check.upload(check, tab.check, [tab.checked, tab.check], **private)
    wire_extend(tab.extend, engine, runs, tab.selected, tab.show, refresh, listing_outputs)
