"""A Job: the stream of typed events of one request, and its cancel switch. Thread-safe, any number of readers."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .events import TERMINAL, Event, Preview

_ids = itertools.count(1)


class Job:
    def __init__(self, kind: str, valid: Any = None):
        self.id = next(_ids)
        self.kind = kind  # "generate", "load" or "refine"
        self.valid = valid  # ValidRequest for generate jobs
        self.target: tuple[str | None, str | None, Any] = (None, None, None)  # (model, memory, speed) for loads
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._cancel = threading.Event()
        self.started = threading.Event()
        self.position = 0  # jobs ahead when last reported
        self.payload: Any = None  # (refiner, arguments) for refine jobs
        self.owner = f"job-{self.id}"  # who queued it: the queue takes turns between owners (a batch's client)
        self.reruns = 0  # times it was queued again because its worker stopped under it (a pool worker died)
        self.avoid: str | None = None  # the worker it last lost; another worker takes it when there is one

    @property
    def seed(self) -> int | None:
        return self.valid.request.seed if self.valid is not None else None

    @property
    def notices(self) -> tuple[str, ...]:
        return self.valid.notices if self.valid is not None else ()

    def emit(self, event: Event) -> None:
        with self._cond:
            if self._events and isinstance(self._events[-1], TERMINAL):
                return  # a job ends once
            self._events.append(event)
            self._cond.notify_all()

    def cancel(self) -> None:
        """Ask the job to stop: a queued job is dropped, a running one stops within one step (also in decode)."""
        self._cancel.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        with self._cond:
            return bool(self._events) and isinstance(self._events[-1], TERMINAL)

    def events(self, latest_preview_only: bool = False, timeout: float | None = None) -> Iterator[Event]:
        """Every event from the first, blocking for new ones, until the terminal event (which is yielded).

        latest_preview_only skips a preview when a newer one is already waiting (for slow consumers like a UI).
        Raises TimeoutError when nothing arrives for `timeout` seconds.
        """
        index = 0
        while True:
            with self._cond:
                wanted = index + 1
                if len(self._events) < wanted:
                    if not self._cond.wait_for(lambda: len(self._events) >= wanted, timeout=timeout):  # noqa: B023
                        raise TimeoutError(f"job {self.id}: no event for {timeout} s")
                event = self._events[index]
                newer_preview = (
                    latest_preview_only
                    and isinstance(event, Preview)
                    and any(isinstance(e, Preview) for e in self._events[index + 1 :])
                )
            index += 1
            if newer_preview:
                continue
            yield event
            if isinstance(event, TERMINAL):
                return

    def wait(self, timeout: float | None = None) -> Event:
        """Block until the job ends; return its terminal event (Done, Ready, Failed or Cancelled)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._events and isinstance(self._events[-1], TERMINAL), timeout):
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            return self._events[-1]

    def history(self) -> list[Event]:
        with self._cond:
            return list(self._events)


def turn_order(pending: Sequence[Job], served: Mapping[str, int]) -> list[Job]:
    """The order waiting jobs will start in if nothing else arrives: owners take turns, the one served least
    recently first (never served: first of all, in arrival order), each owner's jobs in their own order.

    `served` maps an owner to the turn it was last served. Pure, so positions shown to users follow the same rule
    the queue runs by.
    """
    last = dict(served)
    turn = max(last.values(), default=0)
    queue = list(pending)
    order: list[Job] = []
    while queue:
        firsts: dict[str, int] = {}
        for index, job in enumerate(queue):
            firsts.setdefault(job.owner, index)
        chosen = min(firsts.values(), key=lambda i: (last.get(queue[i].owner, -1), i))
        job = queue.pop(chosen)
        turn += 1
        last[job.owner] = turn
        order.append(job)
    return order
