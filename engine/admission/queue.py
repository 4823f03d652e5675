"""The queue in front of the workers: what waits, whose turn it is, where each job stands, and cancel.

Jobs wait here until a worker is free; owners take turns (jobs.turn_order), so one client's batch does not hold
back everyone else's. Any number of workers take from one queue; each waiting job hears how many start before it.
"""

from __future__ import annotations

import threading
from collections import deque

from .. import events as ev
from ..errors import StudioError
from ..jobs import Job, turn_order


class JobQueue:
    def __init__(self, workers: int = 1):
        self.workers = workers  # how many take from it: positions say how many are busy
        self._lock = threading.Condition(threading.RLock())
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._idle: dict[str | None, bool] = {}  # workers waiting in take() -> whether each holds a model
        self._served: dict[str, int] = {}  # owner -> the turn it was last served (turn_order)
        self._turns = 0
        self._closed = False

    def put(self, *jobs: Job) -> None:
        """Queue the jobs, all or none (a shutdown between two takes of a batch must not leave half of it)."""
        with self._lock:
            if self._closed:
                raise StudioError("The engine has shut down.")
            for job in jobs:
                self._pending.append(job)
                self._report_positions(new=job)  # a new owner's job may start before batch takes already waiting
            self._lock.notify_all()

    def put_again(self, job: Job) -> None:
        """A running job whose worker stopped under it waits again, ahead of everything."""
        with self._lock:
            if job in self._running:
                self._running.remove(job)
            if self._closed:
                job.emit(ev.Cancelled(job.id, "The studio is shutting down."))
                return
            self._pending.appendleft(job)
            self._served[job.owner] = -1  # its turn comes first
            self._report_positions(new=job)
            self._lock.notify_all()

    def take(self, worker: str | None = None, loaded: bool = True) -> Job | None:
        """The next job by turn, waiting for one; None once the queue is closed (the worker stops).

        A job that `worker` lost goes to another worker when there is one; a worker that holds no model leaves a
        job to a waiting worker that does (it would load first)."""
        with self._lock:
            self._idle[worker] = loaded
            try:
                while True:
                    # a queued job that was cancelled is removed, not run
                    for job in [j for j in self._pending if j.cancel_requested]:
                        self._pending.remove(job)
                        job.emit(ev.Cancelled(job.id, "Cancelled before it started."))
                    mine = [j for j in self._pending if self.workers == 1 or j.avoid is None or j.avoid != worker]
                    readier = not loaded and any(
                        ready and any(j.avoid != w for j in mine) for w, ready in self._idle.items() if w != worker
                    )
                    if (mine and not readier) or self._closed:
                        break
                    self._lock.wait(timeout=0.5)
            finally:
                del self._idle[worker]
                self._lock.notify_all()  # a worker left the idle ones: the others look again
            if self._closed:
                return None
            job = turn_order(mine, self._served)[0]
            self._pending.remove(job)
            self._turns += 1
            self._served[job.owner] = self._turns
            if len(self._served) > 1000:  # forget owners with nothing waiting
                waiting = {j.owner for j in self._pending}
                self._served = {o: t for o, t in self._served.items() if o in waiting}
            self._running.append(job)
            self._report_positions()
            return job

    def done(self, job: Job) -> None:
        """A worker is finished with the job (whatever its end)."""
        with self._lock:
            if job in self._running:
                self._running.remove(job)

    def __len__(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return len(self._pending) + len(self._running)

    def close(self) -> None:
        """Refuse new jobs, cancel the waiting ones and ask the running ones to stop."""
        with self._lock:
            self._closed = True
            for job in self._pending:
                job.emit(ev.Cancelled(job.id, "The studio is shutting down."))
            self._pending.clear()
            for job in self._running:
                job.cancel()
            self._lock.notify_all()

    def _report_positions(self, new: Job | None = None) -> None:
        """Tell each waiting job how many jobs start before it (the running ones included), when that changed."""
        running = len(self._running)
        for index, waiting in enumerate(turn_order(self._pending, self._served)):
            ahead = index + running
            if waiting is new or waiting.position != ahead:
                waiting.position = ahead
                waiting.emit(ev.Queued(waiting.id, ahead, running, self.workers))
