"""A parallel group as one worker: N processes, one GPU each (N CPU processes over gloo without CUDA), that make
each video together with diffusers' Ulysses context parallelism (rank.py is the process side).

The group is started with torch.multiprocessing (spawn), not as Ray actors: it lives on one machine and needs only
a rendezvous on 127.0.0.1; the studio sees a rank die at once from its process sentinel and starts the group again;
and no package beyond torch is needed for a single box. A pool worker on Ray can hold a whole group.

What crosses to the ranks is what crosses to any worker (the job's id and validated request, LoadOptions,
RunOptions); what comes back is rank 0's events and its encoded MP4, which the studio publishes as usual.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from .. import events as ev
from ..catalog import ModelSpec, resolve_spec
from ..errors import ModelLoadError
from ..jobs import Job
from ..library.output import remove_partials
from ..models.loading import open_model
from .rank import KIND, GroupConfig, rank_main
from .worker import Encoded, LoadOptions, RunOptions, WorkerState, ended_here

log = logging.getLogger("wan_studio.engine")
START_TIMEOUT_S = 300.0  # every rank imports torch and diffusers and joins the rendezvous
TIMEOUT_S = 6 * 3600.0  # a collective's longest wait (ranks wait in one only while a job runs)
GRACE_S = 10.0  # how long the other ranks may take to end a job once one rank ended it with a failure


class GroupLost(Exception):
    """A rank of the group died or could not start; args[0] says which, in the user's words."""


def parallel_refusal(spec: ModelSpec, degree: int, device: torch.device) -> ModelLoadError | None:
    """Why this model cannot be split `degree` ways here, with what would work; None when it can (or is unknown).

    Ulysses gives each rank a share of the attention heads, so the degree must divide their number; on CUDA each
    rank needs a GPU of its own."""
    if degree <= 1:
        return None
    if device.type == "cuda" and degree > (count := torch.cuda.device_count()):
        return ModelLoadError(
            f"--parallel {degree} needs {degree} GPUs and this machine shows {count}",
            f"Start with --parallel {count} or less (CUDA_VISIBLE_DEVICES picks which).",
            spec.id,
        )
    heads = spec.heads
    if heads is None or heads % degree == 0:
        return None
    works = [n for n in range(2, heads + 1) if heads % n == 0 and n <= 8]
    fix = f"--parallel {' or '.join(str(n) for n in works)}" if works else "no --parallel"
    return ModelLoadError(
        f"--parallel {degree} cannot split it: Ulysses needs the degree to divide its {heads} attention heads",
        f"Start with {fix} (or --parallel 1).",
        spec.id,
    )


def parallel_label(degree: int, device: torch.device) -> str:
    """The header's line for a group: 'Parallel: 4 GPUs (Ulysses)'."""
    if degree <= 1:
        return ""
    what = "GPUs" if device.type == "cuda" else "CPU processes"
    return f"Parallel: {degree} {what} ({KIND.capitalize()})"


def group_devices(degree: int, device: torch.device, first: int = 0) -> tuple[str, ...]:
    """One device per rank: GPUs first..first+degree-1 (of those CUDA_VISIBLE_DEVICES shows), or the CPU."""
    if device.type == "cuda":
        return tuple(f"cuda:{first + rank}" for rank in range(degree))
    return ("cpu",) * degree


class ParallelWorker:
    """The Worker protocol over a group of `degree` processes; the group starts on the first job (or load)."""

    def __init__(self, degree: int, devices: tuple[str, ...], name: str = "group", timeout_s: float = TIMEOUT_S):
        self.name = name
        self.degree = degree
        self.devices = devices
        self.timeout_s = timeout_s
        self.on_start: Callable[[Job], None] | None = None  # the studio's checks when a job starts (LocalWorker's)
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._stop = None
        self._state = WorkerState("not loaded", "", False)
        self._load: LoadOptions | None = None  # what the ranks were last told to hold

    # ----- the protocol ---------------------------------------------------------------------------------------

    def run(self, job: Job, load: LoadOptions, options: RunOptions) -> Encoded | None:
        if ended_here(job, self.on_start, self._state.memory or None):
            return None
        try:
            if not (self._state.loaded and load == self._load):
                self._fetch(job, load)
        except ModelLoadError as exc:
            self._state = WorkerState("failed", str(exc.for_model(load.model)), False)
            job.emit(ev.Failed(job.id, self._state.message, "model"))
            return None
        self._load = load
        try:
            self._ensure_group(job)
            self._stop.clear()
            for rank, conn in enumerate(self._conns):
                try:
                    conn.send(("run", job.id, job.kind, job.valid, load, options))
                except OSError:  # it died since the group was last looked at
                    raise GroupLost(self._death(rank)) from None
            return self._follow(job)
        except GroupLost as exc:
            self._lose(job, str(exc), options)
            return None

    def state(self) -> WorkerState:
        return self._state

    def stop(self) -> None:
        """End every rank: asked first, then terminated; nothing is left behind."""
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        self._end_group()
        self._state = WorkerState("not loaded", "", False)

    def pids(self) -> list[int]:
        """The ranks' process ids, rank 0 first (empty before the group starts)."""
        return [p.pid for p in self._procs]

    def _fetch(self, job: Job, load: LoadOptions) -> None:
        """Download (or build) the model once, in this process, before the ranks read it: N ranks fetching at once
        would download it N times, and transformers writes a model from rank 0 of a process group only."""

        def report(stage: str, fraction: float, message: str) -> None:
            job.emit(ev.Loading(job.id, stage, fraction, message))

        open_model(resolve_spec(load.model, load.revision), report)

    # ----- the group ------------------------------------------------------------------------------------------

    def _ensure_group(self, job: Job) -> None:
        if self._procs and all(p.is_alive() for p in self._procs):
            return
        self._end_group()
        message = f"starting {self.degree} processes for the parallel group"
        self._state = WorkerState("loading", message, False)
        job.emit(ev.Loading(job.id, "group", 0.0, message))
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        self._stop = context.Event()
        threads = max(1, (os.cpu_count() or 1) // self.degree)
        config = GroupConfig(self.degree, _free_port(), self.devices, self.timeout_s, threads)
        for rank in range(self.degree):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=rank_main,
                args=(rank, config, theirs, self._stop, os.getpid()),
                name=f"wan-studio-rank-{rank}",
                daemon=True,  # multiprocessing ends them when the studio exits; rank_main also watches for it
            )
            proc.start()
            theirs.close()
            self._procs.append(proc)
            self._conns.append(ours)
        up: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(up) < self.degree:
            for rank, message in self._messages(deadline - time.monotonic()):
                if message[0] == "up":
                    up.add(rank)
            if time.monotonic() > deadline:
                raise GroupLost(f"the parallel group did not start within {START_TIMEOUT_S:.0f} s")
        log.info("parallel group up: %d ranks on %s (%s)", self.degree, ", ".join(self.devices), config.backend)

    def _messages(self, timeout: float) -> list[tuple[int, tuple]]:
        """What the ranks said within `timeout` seconds, as (rank, message); raises GroupLost when a rank died."""
        sentinels = {p.sentinel: rank for rank, p in enumerate(self._procs)}
        conns = {c: rank for rank, c in enumerate(self._conns)}
        said = []
        for ready in wait([*conns, *sentinels], timeout=max(0.0, timeout)):
            if ready in conns:
                try:
                    said.append((conns[ready], ready.recv()))
                except (EOFError, OSError):
                    raise GroupLost(self._death(conns[ready])) from None
        for ready in wait(list(sentinels), timeout=0):
            raise GroupLost(self._death(sentinels[ready]))
        return said

    def _death(self, rank: int) -> str:
        proc = self._procs[rank]
        proc.join(1)
        code = proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"stopped (exit code {code})"
        return f"process {rank} of the parallel group {how}"

    def _follow(self, job: Job) -> Encoded | None:
        """Forward rank 0's events until every rank ended the job; the encoded video, or None."""
        ends: dict[int, tuple] = {}
        failed_at: float | None = None
        while len(ends) < self.degree:
            if job.cancel_requested:
                self._stop.set()
            for rank, message in self._messages(0.2):
                if message[0] == "event":
                    job.emit(message[1])
                    self._note(message[1])
                elif message[0] == "end":
                    ends[rank] = message
                    if message[1] is not None and failed_at is None:
                        failed_at = time.monotonic()
                        job.emit(message[1])  # a rank's failure; kept only when rank 0 has not ended the job
            if failed_at is not None and len(ends) < self.degree and time.monotonic() - failed_at > GRACE_S:
                waiting = sorted(set(range(self.degree)) - set(ends))
                raise GroupLost(f"process {waiting[0]} of the parallel group did not end the failed job")
        _, _, encoded, state = ends[0]
        self._state = state
        return encoded

    def _note(self, event: ev.Event) -> None:
        """The header follows the group's load through rank 0's events."""
        if isinstance(event, ev.Loading) and event.stage != "lora":
            self._state = replace(self._state, state="loading", message=event.message, loaded=False)
        elif isinstance(event, ev.Loading):
            self._state = replace(self._state, activity=event.message)

    def _lose(self, job: Job, why: str, options: RunOptions) -> None:
        """A rank died mid-job: the job fails with one sentence, the group ends and starts again with the next job,
        and no half-written file of the dead rank stays in the outputs folder."""
        log.error("job %s: %s; the group starts again with the next job", job.id, why)
        self._end_group()
        remove_partials(options.outputs)  # the partial names carry the writer's pid: only the dead ones go
        self._state = WorkerState("not loaded", f"{why[0].upper()}{why[1:]}; it starts again with the next job", False)
        job.emit(
            ev.Failed(
                job.id,
                f"The video could not be finished: {why}. Nothing was saved. The group starts again for the next job.",
            )
        )

    def _end_group(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
        for proc in self._procs:
            proc.join(5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []


def _free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, for the group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
