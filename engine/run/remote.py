"""A worker as a Ray actor, in the actor's own process, on whichever machine Ray placed it.

It holds an ordinary worker (a LocalWorker on its GPU, or a parallel group on its GPUs) and runs each job in a
thread while `run` streams the job's events back as a generator (Ray's streaming generators). The MP4 is encoded
into a scratch folder of this machine and sent back as bytes: the studio signs it and saves it in its own outputs
folder, so the signing key and the Gallery stay on the studio's machine.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch

from .. import events as ev
from ..jobs import Job
from .parallel import ParallelWorker, group_devices
from .worker import LoadOptions, LocalWorker, RunOptions, WorkerState, device_name

_END = object()


class StreamJob(Job):
    """The studio's job as the actor sees it; every event also goes to the stream back to the studio."""

    def __init__(self, job_id: int, kind: str, valid: Any, sink: queue.Queue):
        super().__init__(kind, valid)
        self.id = job_id
        self._sink = sink

    def emit(self, event: ev.Event) -> None:
        super().emit(event)
        self._sink.put(event)


class WorkerActor:
    """Worker `index` of the pool (wrapped by ray.remote in run/dispatcher.py)."""

    def __init__(self, index: int, parallel: int):
        self.index = index
        self.host = socket.gethostname()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray picks the visible GPUs
        self.scratch = tempfile.mkdtemp(prefix="wan-studio-worker-")  # this machine's partial MP4s
        self.identity = {"index": index + 1, "host": self.host, "device": device_name(self.device)}
        if parallel > 1:
            self.inner: Any = ParallelWorker(parallel, group_devices(parallel, self.device), f"worker-{index + 1}")
        else:
            self.inner = LocalWorker(self.device, f"worker-{index + 1}")
            self.inner.identity = self.identity  # saved with each video it makes
        self.jobs: dict[int, Job] = {}

    def run(self, job_id: int, kind: str, valid: Any, load: LoadOptions, options: RunOptions) -> Iterator[tuple]:
        """("started", pid), the job's events as they happen, then ("video", bytes, stem, plain stem, settings) or
        ("end",)."""
        sink: queue.Queue = queue.Queue()
        job = StreamJob(job_id, kind, valid, sink)
        self.jobs[job_id] = job
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["encoded"] = self.inner.run(job, load, replace(options, outputs=self.scratch))
            finally:
                sink.put(_END)

        threading.Thread(target=work, name=f"wan-studio-job-{job_id}", daemon=True).start()
        yield ("started", os.getpid())  # which process runs it (the studio keeps it while the job runs)
        try:
            while (item := sink.get()) is not _END:
                yield ("event", item)
        finally:
            self.jobs.pop(job_id, None)
        encoded = result.get("encoded")
        if encoded is None:
            yield ("end",)
            return
        path = encoded.video.partial()
        data = path.read_bytes()
        encoded.video.discard()
        yield ("video", data, encoded.video.stem, encoded.video.plain_stem, encoded.settings)

    def cancel(self, job_id: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancel()

    def state(self) -> tuple[WorkerState, dict[str, Any]]:
        return self.inner.state(), {**self.identity, "pid": os.getpid()}

    def stop(self) -> None:
        self.inner.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)
