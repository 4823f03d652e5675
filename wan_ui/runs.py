"""Following one generation for the page or the API: submit, turn engine events into updates, honour Stop.

Disconnect policy: when the browser (or API client) goes away mid-job, the job is NOT cancelled. It completes,
and its video and settings land in the outputs folder and the Gallery. Only the Stop button cancels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from engine import (
    Cancelled,
    Decoding,
    Done,
    Engine,
    Failed,
    Frames,
    GenerationRequest,
    Job,
    Loading,
    Notice,
    Preview,
    Queued,
    Step,
    StudioError,
    Window,
    validate,
)

from . import zerogpu
from .media import PreviewFiles
from .progress import status_line

log = logging.getLogger("wan_studio.ui")
STATUS_EVERY_S = 0.15  # plain progress lines are coalesced; previews, frames and the end always go out
DECODED_SHOWN = 64  # decoded frames kept for the animated preview: the latest ones (a long video's window)


class QueueFull(StudioError):
    """More jobs wait than --queue-size allows."""


class Runs:
    """The job each page session runs, per tab, so that Stop can reach it (Stop may arrive before the job).

    Waiting happens in the engine's queue, not Gradio's: generation events have no Gradio concurrency limit, each
    handler submits at once and blocks on its job's events, so a waiting user sees their place, Stop and the status
    line keep working when the queue is full (Gradio's own max_size would refuse them too), and more than
    `max_waiting` jobs behind the running one are refused here with a clear message.
    """

    def __init__(self, max_waiting: int = 16) -> None:
        self.max_waiting = max(1, int(max_waiting))
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._stopped: set[str] = set()

    def arm(self, key: str) -> None:
        with self._lock:
            self._stopped.discard(key)

    def attach(self, key: str, job: Job) -> None:
        with self._lock:
            self._jobs[key] = job
            if key in self._stopped:
                job.cancel()

    def detach(self, key: str, job: Job) -> None:
        with self._lock:
            if self._jobs.get(key) is job:
                del self._jobs[key]

    def stop(self, key: str) -> bool:
        """Cancel the session's job; True when one was running or queued in the engine."""
        with self._lock:
            self._stopped.add(key)
            job = self._jobs.get(key)
        if job is not None:
            job.cancel()
        return job is not None

    def stop_requested(self, key: str) -> bool:
        with self._lock:
            return key in self._stopped


@dataclass
class Update:
    status: str
    preview: str | None = None  # a new preview file, when there is one
    video: str | None = None
    settings: dict[str, Any] | None = None
    seed: int | None = None
    notices: list[str] = field(default_factory=list)
    finished: bool = False


def status_markdown(update: Update) -> str:
    status = update.status
    for prefix in ("Not started:", "Failed:"):
        if status.startswith(prefix):
            status = f"**{prefix}**{status[len(prefix) :]}"
    lines = [status]
    lines += [f"- {n}" for n in update.notices]
    return "\n".join(lines)


def shown(update: Update, status: Any, preview: Any, video: Any) -> dict[Any, Any]:
    """An update as a page shows it: the status line always, a new preview and the finished video when there."""
    out: dict[Any, Any] = {status: status_markdown(update)}
    if update.preview:
        out[preview] = update.preview
    if update.video:
        out[video] = update.video
    return out


def refuse(message: str, title: str) -> gr.Error:
    """An error for an API caller: the message as written, one line in the terminal, no traceback."""
    log.info("%s: %s", title, message)
    return gr.Error(message, title=title, print_exception=False)


def follow(
    engine: Engine,
    request: GenerationRequest,
    runs: Runs,
    key: str,
    names: dict[str, str] | None = None,
    raise_errors: bool = True,
) -> Iterator[Update]:
    """Submit the request and yield updates until it ends, a refusal or failure as the last update's status.

    With raise_errors (the API) a refusal or failure also raises gr.Error, so a client's call fails; the page passes
    False and shows it in the status line only (a raised error would paint a badge over every output).
    `names` maps the engine's field names to the caller's (the API's num_frames for frames) in those messages.
    """
    if runs.stop_requested(key):
        yield Update("Stopped before it started; nothing was saved.", finished=True)
        return
    job = None
    try:
        if zerogpu.active():  # the job runs in ZeroGPU's process; Stop can't reach it there
            fps = validate(request, engine.spec).request.fps  # refuse bad input before asking for a GPU
            events = zerogpu.gpu_events(engine)(request)
        else:
            _check_room(engine, runs, 1)
            job = engine.submit(request)
            runs.attach(key, job)
            fps = job.valid.request.fps
            events = job.events(latest_preview_only=True)
    except StudioError as exc:
        yield from _not_started(exc, names, raise_errors)
        return
    try:
        yield from job_updates(engine, events, fps, raise_errors)
    finally:
        # the page or client may be gone (generator closed): the job goes on and its video is kept
        if job is not None:
            runs.detach(key, job)


def _check_room(engine: Engine, runs: Runs, takes: int) -> None:
    """Refuse when the queue (counting every take of a batch) would pass --queue-size."""
    if engine.queue_length() + takes - 1 > runs.max_waiting:
        what = "" if takes == 1 else f" for {takes} more takes"
        raise QueueFull(
            f"The studio's queue is full{what} ({engine.queue_length()} jobs waiting or running, at most "
            f"{runs.max_waiting + 1}). Try again when some finish."
        )


def _not_started(exc: StudioError, names: dict[str, str] | None, raise_errors: bool) -> Iterator[Update]:
    message = str(exc)
    field = getattr(exc, "field", None)
    if names and field in names and message.startswith(field):
        message = names[field] + message[len(field) :]
    elif not raise_errors and message:  # the page's labels are capitalised ("Width"), so is the sentence
        message = message[0].upper() + message[1:]
    yield Update(f"Not started: {message}", finished=True)  # stays on the page until the next action
    if raise_errors:
        raise refuse(message, "Can't start this video") from None
    log.info("Can't start this video: %s", message)


def job_updates(engine: Engine, events: Iterator, fps: int, raise_errors: bool = True) -> Iterator[Update]:
    """One job's events as page updates: coalesced status lines, animated previews, the video at the end."""
    previews = PreviewFiles()
    notices: list[str] = []
    decoded: deque = deque(maxlen=DECODED_SHOWN)
    last_status = 0.0
    line = "Starting…"
    window = ""  # "Window 2 of 3 · " while a long video's windows run
    try:
        for event in events:
            if isinstance(event, Notice):
                notices.append(event.message)
                continue
            if isinstance(event, Window):
                window = f"Window {event.index} of {event.count} · "
                decoded.clear()
            said = status_line(event)
            if said and window and isinstance(event, (Step, Decoding, Window)):
                said = said if isinstance(event, Window) else window + said
            line = said or line  # a preview keeps the step line it follows
            if isinstance(event, Preview):
                path = previews.animation(event.frames, fps / 4)  # a latent frame spans 4 video frames
                yield Update(line, preview=path, notices=notices)
            elif isinstance(event, Frames):
                decoded.extend(previews.thumbnail(f) for f in event.frames[::2])  # every other frame is enough
            elif isinstance(event, Decoding):
                path = previews.animation(list(decoded), fps / 2) if decoded else None
                yield Update(line, preview=path, notices=notices)
            elif isinstance(event, Done):
                yield Update(
                    line, video=event.path, settings=event.settings, seed=event.seed, notices=notices, finished=True
                )
            elif isinstance(event, Cancelled):
                yield Update(event.message, notices=notices, finished=True)
            elif isinstance(event, Failed):
                yield Update(f"Failed: {event.message}", notices=notices, finished=True)
                if raise_errors:
                    raise refuse(event.message, "The video failed")
            elif isinstance(event, Step) and engine.preview_every and event.index % engine.preview_every == 0:
                continue  # its preview follows at once and carries this line: one update per step, not two
            else:
                now = time.monotonic()
                edge = isinstance(event, Loading) and event.fraction in (0.0, 1.0)  # a stage's start and end
                if isinstance(event, Queued) or edge or now - last_status >= STATUS_EVERY_S:
                    last_status = now
                    yield Update(line, notices=notices)
    finally:
        previews.close()


@dataclass
class Take:
    """A finished take of a batch, for the grid and the API."""

    index: int
    video: str
    seed: int | None
    prompt: str
    settings: dict[str, Any]


def follow_batch(
    engine: Engine,
    requests: list[GenerationRequest],
    runs: Runs,
    key: str,
    names: dict[str, str] | None = None,
    raise_errors: bool = True,
) -> Iterator[tuple[Update, list[Take]]]:
    """Submit every take (all refused, or all queued) and follow them in order: (update, finished takes so far).

    Stop cancels the running take and those still waiting; finished takes stay. A take that fails does not stop the
    others; the last update says how many finished.
    """
    if runs.stop_requested(key):
        yield Update("Stopped before it started; nothing was saved.", finished=True), []
        return
    try:
        if zerogpu.active():  # each ZeroGPU call gets the GPU for one job in its own process
            raise StudioError(
                "Variations need the studio's own queue, which ZeroGPU Spaces do not have: "
                "make the takes one at a time."
            )
        _check_room(engine, runs, len(requests))
        batch = engine.submit_batch(requests, owner=key.rsplit(":", 1)[0])
    except StudioError as exc:
        for update in _not_started(exc, names, raise_errors):
            yield update, []
        return
    runs.attach(key, batch)
    done: list[Take] = []
    problems: list[str] = []
    total = len(batch.jobs)
    try:
        for index, job in enumerate(batch.jobs, start=1):
            fps = job.valid.request.fps
            prefix = f"Take {index} of {total} ({len(done)} done)"
            for update in job_updates(engine, job.events(latest_preview_only=True), fps, raise_errors=False):
                if update.video:
                    r = job.valid.request
                    done.append(Take(index, update.video, update.seed, r.prompt, update.settings or {}))
                elif update.finished and not job.cancel_requested:
                    problems.append(f"take {index}: {update.status}")
                if not update.finished:
                    yield replace(update, status=f"{prefix} · {update.status}"), list(done)
    finally:
        runs.detach(key, batch)
    stopped = any(job.cancel_requested for job in batch.jobs)
    if stopped:
        status = f"Stopped: {len(done)} of {total} takes finished and were kept; the rest were not made."
    else:
        status = f"Done: {len(done)} of {total} takes" + (" · " + "; ".join(problems) if problems else "")
    yield Update(status, finished=True), list(done)
    if raise_errors and not done and problems:
        raise refuse("; ".join(problems), "The takes failed")
