"""A pool of workers on Ray, as the studio sees it: one RayWorker per actor, each taking jobs from the studio's
queue like a local worker; the Ray driver runs in a process of its own (run/dispatcher.py), started here and
started again while the cluster cannot be reached.

The queue, the outputs folder and the signing key stay in the studio: a job's events stream back from its actor,
then the MP4 as bytes, which is written here under a hidden name and published like any worker's video.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from .. import events as ev
from ..errors import ModelLoadError
from ..jobs import Job
from ..library.output import EncodedVideo, check_outputs_dir, write_failure_message
from .dispatcher import PoolConfig, dispatcher_main
from .worker import Encoded, LoadOptions, RunOptions, WorkerState, ended_here

log = logging.getLogger("wan_studio.engine")
RETRY_S = 5.0  # how soon the studio tries the cluster again after it could not be reached


def pool_refusal(workers: int, parallel: int, device: torch.device, local: bool) -> ModelLoadError | None:
    """A local pool that asks for more GPUs than this machine shows, said before anything starts."""
    if not local or device.type != "cuda" or workers * parallel <= (count := torch.cuda.device_count()):
        return None
    return ModelLoadError(
        f"--workers {workers}{f' --parallel {parallel}' if parallel > 1 else ''} needs {workers * parallel} GPUs "
        f"and this machine shows {count}",
        "Start with fewer --workers, or join a cluster with more GPUs (--ray ADDRESS)",
    )


class WorkerLost(Exception):
    """The worker running a job stopped (its process died, its machine went away); args[0] says which."""


class RayPool:
    """N workers on Ray: a local instance on 127.0.0.1 (`address` None) or the team's cluster."""

    def __init__(self, address: str | None, workers: int, parallel: int = 1):
        self.config = PoolConfig(address, max(1, workers), max(1, parallel))
        self.workers = [RayWorker(self, index) for index in range(self.config.workers)]
        self.problem: str | None = None  # the cluster cannot be reached: said in the header, jobs refused
        self.machines = 0
        self.states: list[tuple[WorkerState | None, dict[str, Any], bool] | None] = [None] * self.config.workers
        self.up = threading.Event()  # the workers are placed and take jobs
        self._jobs: dict[int, queue.Queue] = {}
        self.where: dict[int, int] = {}  # running job id -> the index of the worker running it
        self.pids: dict[int, int] = {}  # running job id -> the process running it (once it started)
        self._conn: Connection | None = None
        self._proc: Any = None
        self._send_lock = threading.Lock()
        self._stopping = False
        threading.Thread(target=self._keep_connected, name="wan-studio-pool", daemon=True).start()

    # ----- for the Engine and the header ----------------------------------------------------------------------

    def summary(self) -> str:
        """'Workers: 3 of 4 busy (2 machines)', or what stands in the way."""
        if self.problem:
            return f"Workers: {self.problem}."
        if not self.up.is_set():
            where = f"the Ray cluster at {self.config.address}" if self.config.address else "a local Ray instance"
            return f"Workers: {self.config.workers}, starting on {where}"
        busy = sum(1 for s in self.states if s is not None and s[2])
        machines = f"{self.machines} machine{'s' if self.machines != 1 else ''}"
        return f"Workers: {busy} of {self.config.workers} busy ({machines})"

    def details(self) -> list[str]:
        """One line per worker: where it runs and its state, or that Ray is restarting it."""
        lines = []
        for index, known in enumerate(self.states):
            if known is None:
                lines.append(f"Worker {index + 1}: starting")
                continue
            state, identity, busy = known
            where = f" ({identity['host']}, {identity['device']})" if "host" in identity else ""
            if state is None:
                lines.append(f"Worker {index + 1}{where}: restarting (Ray is starting it again)")
                continue
            what = "running a job" if busy else state.state
            if state.state in ("loading", "failed") and state.message:
                what = f"{state.state}: {state.message}"
            lines.append(f"Worker {index + 1}{where}: {what}")
        return lines

    def stop(self) -> None:
        """End the driver process (and with it a local Ray instance and its workers)."""
        self._stopping = True
        self._send(("stop",))
        if self._proc is not None:
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)

    # ----- the driver process ---------------------------------------------------------------------------------

    def _keep_connected(self) -> None:
        while not self._stopping:
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            self._proc = context.Process(
                target=dispatcher_main, args=(self.config, theirs, os.getpid()), name="wan-studio-pool", daemon=True
            )
            self._proc.start()
            theirs.close()
            self._conn = ours
            self._read(ours)
            self.up.clear()
            self._conn = None
            for sink in list(self._jobs.values()):  # jobs still waiting on a worker hear that it is gone
                sink.put(("lost", 0, "the connection to the Ray cluster was lost"))
            self._proc.join(10)
            if not self._stopping:
                time.sleep(RETRY_S)

    def _read(self, conn: Connection) -> None:
        """Route the driver's messages until it ends."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "up":
                self.problem = None
                self.up.set()
                log.info("pool up: %d workers on %s", message[1], self.config.address or "a local Ray instance")
            elif kind == "down" and not self._stopping:
                if self.problem != message[1]:
                    log.error("%s", message[1])
                self.problem = message[1]
                for sink in list(self._jobs.values()):
                    sink.put(("lost", 0, message[1][0].lower() + message[1][1:]))
            elif kind == "pool":
                self.states, self.machines = list(message[1]), message[2]
            elif (sink := self._jobs.get(message[1])) is not None:
                sink.put(message)

    def _send(self, message: tuple) -> bool:
        with self._send_lock:
            if self._conn is None:
                return False
            try:
                self._conn.send(message)
            except OSError:
                return False
            return True

    def _open(self, job_id: int, index: int) -> queue.Queue:
        sink: queue.Queue = queue.Queue()
        self._jobs[job_id] = sink
        self.where[job_id] = index
        return sink

    def _close(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self.where.pop(job_id, None)
        self.pids.pop(job_id, None)


class RayWorker:
    """The Worker protocol for one actor of the pool."""

    def __init__(self, pool: RayPool, index: int):
        self.pool = pool
        self.index = index
        self.name = f"worker-{index + 1}"
        self.on_start: Callable[[Job], None] | None = None  # the studio's checks when a job starts

    def run(self, job: Job, load: LoadOptions, options: RunOptions) -> Encoded | None:
        if ended_here(job, self.on_start, None):
            return None
        while not self.pool.up.wait(0.2):  # the first connection takes a few seconds
            if self.pool.problem or job.cancel_requested:
                break
        if self.pool.problem:
            job.emit(ev.Failed(job.id, f"{self.pool.problem}.", "error"))
            return None
        sink = self.pool._open(job.id, self.index)
        try:
            if not self.pool._send(("run", job.id, self.index, job.kind, job.valid, load, options)):
                raise WorkerLost("the connection to the Ray cluster was lost")
            return self._follow(job, sink, options)
        finally:
            self.pool._close(job.id)

    def _follow(self, job: Job, sink: queue.Queue, options: RunOptions) -> Encoded | None:
        asked_to_stop = False
        while True:
            if job.cancel_requested and not asked_to_stop:
                asked_to_stop = self.pool._send(("cancel", job.id, self.index))
            try:
                message = sink.get(timeout=0.2)
            except queue.Empty:
                continue
            kind = message[0]
            if kind == "started":
                self.pool.pids[job.id] = message[2]
            elif kind == "event":
                job.emit(message[2])
            elif kind == "video":
                try:
                    return self._save(message[2:], options)
                except OSError as exc:  # a full disk (ENOSPC, EDQUOT, EFBIG) is said as such
                    job.emit(ev.Failed(job.id, write_failure_message(Path(options.outputs), exc), "output"))
                    return None
            elif kind == "end":
                return None
            elif kind == "lost":
                raise WorkerLost(message[2])

    def _save(self, video: tuple, options: RunOptions) -> Encoded:
        """The worker's MP4, written under a hidden name in the studio's outputs folder (publish names it)."""
        data, stem, plain_stem, settings = video
        folder = check_outputs_dir(Path(options.outputs))
        encoded = EncodedVideo(str(folder), f"{os.getpid()}.{time.monotonic_ns()}", stem, plain_stem)
        try:
            with open(encoded.partial(), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            encoded.discard()
            raise
        return Encoded(encoded, settings)

    def state(self) -> WorkerState:
        known = self.pool.states[self.index]
        if self.pool.problem:
            return WorkerState("failed", self.pool.problem, False)
        if known is None:
            return WorkerState("not loaded", "", False)
        if known[0] is None:
            return WorkerState("loading", "Ray is starting this worker again", False)
        return known[0]

    def stop(self) -> None:
        """The pool stops all its workers at once (RayPool.stop)."""
