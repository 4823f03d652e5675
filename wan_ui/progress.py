"""What the page says while a job runs: one line per engine event, in the creator's words."""

from __future__ import annotations

from engine import Cancelled, Decoding, Done, Failed, Loading, ModelState, Notice, Queued, Ready, Step, Window

PHASES = {"high-noise": "High-noise expert", "low-noise": "Low-noise expert", "denoise": "Denoising"}


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status_line(event: object) -> str | None:
    """A short status for an event, or None when the event changes nothing the user reads."""
    if isinstance(event, Queued):
        waiting = event.position - event.busy  # jobs that wait ahead of this one
        if event.position == 0 or (event.workers > 1 and waiting == 0 and event.busy < event.workers):
            return "Starting…"
        if event.workers > 1:
            return (
                f"Waiting in the studio queue: {waiting} job{'s' if waiting != 1 else ''} ahead, "
                f"{event.busy} of {event.workers} workers busy."
            )
        return f"Waiting in the studio queue: {event.position} job{'s' if event.position > 1 else ''} ahead."
    if isinstance(event, Loading) and event.stage == "lora":
        return f"LoRA: {event.message}" + (f" ({event.fraction:.0%})" if event.fraction else "")
    if isinstance(event, Loading):
        return f"Loading the model ({event.fraction:.0%}): {event.message}"
    if isinstance(event, Window):
        return f"Window {event.index} of {event.count} · {event.new} new frames · starting"
    if isinstance(event, Step):
        eta = "" if event.eta is None else f" · about {clock(event.eta)} left"
        phase = PHASES.get(event.phase, event.phase)
        return f"{phase} · step {event.index}/{event.total} · {clock(event.elapsed)} elapsed{eta}"
    if isinstance(event, Decoding):
        return f"Decoding · {event.done}/{event.total} latent frames"
    if isinstance(event, Done):
        total = event.timings.get("total", 0.0)
        windows = len(event.settings.get("windows") or [])
        made = f" · {windows} windows, {event.settings.get('total_frames')} frames" if windows > 1 else ""
        return f"Done in {clock(total)} · seed {event.seed}{made}"
    if isinstance(event, Ready):
        return f"Model ready · memory mode {event.memory}"
    if isinstance(event, (Failed, Cancelled)):
        return event.message
    if isinstance(event, Notice):
        return event.message
    return None


def header_markdown(state: ModelState, queue: int) -> str:
    """The header's status line: model, its state, memory mode and device."""
    what = {
        "not loaded": "not loaded yet (loads on first use)",
        "loading": f"loading: {state.message}" if state.message else "loading",
        "ready": "ready",
        "failed": f"failed: {state.message.rstrip('.')}. Choose another model in the menu above.",
    }.get(state.state, state.state)
    memory = state.memory + (f" ({state.memory_reason})" if state.memory_reason else "")
    jobs = "idle" if queue == 0 else f"{queue} job{'s' if queue > 1 else ''} running or waiting"
    device = f"{state.device} · {state.parallel}" if state.parallel else state.device
    line = f"**{state.label}**: {what}  \nMemory mode: {memory} · Device: {device} · Queue: {jobs}"
    if state.pool:
        line += f"  \n{state.pool}" + "".join(f"  \n· {worker}" for worker in state.pool_workers)
    if state.placement:
        line += f"  \nWeights: {state.placement}"
    if state.storage:
        line += f"  \nStorage: {state.storage}"
    if state.activity:
        line += f"  \nNow: {state.activity}"
    if state.advice and state.state != "failed":
        line += f"  \n**Before you start:** {state.advice}"
    return line


def tiny_banner(state: ModelState) -> str:
    return (
        "**Offline demo model.** Its weights are random, so every video is coloured noise. It is here so the "
        "studio runs anywhere without downloads. For real videos start the studio on a GPU with "
        "`python app.py --model ti2v-5b` (24 GB or more; the A14B models want 48 GB or more, or offloading)."
    )
