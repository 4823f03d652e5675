"""Variations: one request made into 2-8 takes that differ only in their seed, their wording, or both.

Each take is an ordinary request (the same validation, the same queue); what makes them a batch is the record in
`extra["batch"]` (id, index, count, what varied), saved with every take's settings, which the Gallery groups by.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace

from ..errors import RequestError
from .request import SEED_MAX, GenerationRequest

MIN_TAKES, MAX_TAKES = 2, 8
VARY = ("seeds", "wordings", "both")
SEED_MODES = ("random", "consecutive")


def wordings(prompts: str | None) -> list[str]:
    """The non-blank lines of a prompts text, stripped."""
    return [line.strip() for line in (prompts or "").splitlines() if line.strip()]


def _count(count: object) -> int | None:
    if count is None or count == "":
        return None
    try:
        value = float(count)
    except (TypeError, ValueError):
        raise RequestError("count", f"count must be a whole number of takes; got {count!r}") from None
    if value != int(value):
        raise RequestError("count", f"count must be a whole number of takes; got {count!r}")
    return int(value)


def plan_takes(
    base: GenerationRequest,
    count: object = None,
    prompts: str | None = None,
    vary: str | None = None,
    seeds: str = "random",
) -> list[GenerationRequest]:
    """The batch's requests, in order. Refuses with RequestError before anything is queued.

    vary: seeds (count takes of the base prompt), wordings (one take per line, all with one seed so only the words
    differ) or both (one take per line, each with its own seed); by default wordings when lines are given.
    seeds: random, or consecutive from the base seed (a random start when it is -1).
    """
    lines = wordings(prompts)
    if prompts and not lines:
        raise RequestError("prompts", "prompts has only blank lines: write one wording per line")
    vary = vary or ("wordings" if lines else "seeds")
    if vary not in VARY:
        raise RequestError("vary", f"vary must be one of {', '.join(VARY)}; got {vary!r}")
    if seeds not in SEED_MODES:
        raise RequestError("seeds", f"seeds must be random or consecutive; got {seeds!r}")
    n = _count(count)
    if vary == "seeds":
        if n is None:
            raise RequestError("count", f"count must say how many takes to make ({MIN_TAKES} to {MAX_TAKES})")
        texts = [base.prompt] * n
    else:
        if not lines:
            raise RequestError("prompts", "Varying the wording needs prompts: one wording per line")
        if len(lines) > MAX_TAKES:
            raise RequestError("prompts", f"prompts has {len(lines)} wordings; a batch makes at most {MAX_TAKES} takes")
        if n is not None and n != len(lines):
            raise RequestError(
                "count", f"count is {n} but prompts has {len(lines)} wordings: leave count out, or make them agree"
            )
        n, texts = len(lines), lines
    if not MIN_TAKES <= n <= MAX_TAKES:
        raise RequestError("count", f"count must be between {MIN_TAKES} and {MAX_TAKES} takes; got {n}")
    start = base.seed if isinstance(base.seed, int) and base.seed >= 0 else secrets.randbelow(SEED_MAX + 1)
    if vary == "wordings":
        take_seeds = [start] * n
    elif seeds == "consecutive":
        take_seeds = [(start + i) % (SEED_MAX + 1) for i in range(n)]
    else:
        take_seeds = [start]
        while len(take_seeds) < n:  # random, and never the same seed twice in one batch
            if (s := secrets.randbelow(SEED_MAX + 1)) not in take_seeds:
                take_seeds.append(s)
    batch_id = uuid.uuid4().hex[:10]
    return [
        replace(
            base,
            prompt=text,
            seed=seed,
            extra={
                **base.extra,
                "batch": {"id": batch_id, "index": i + 1, "count": n, "varied": vary, "seeds": seeds},
            },
        )
        for i, (text, seed) in enumerate(zip(texts, take_seeds, strict=True))
    ]


class Batch:
    """The jobs of one batch: Stop cancels the takes still to come and the running one (finished takes stay)."""

    def __init__(self, jobs: list) -> None:
        self.jobs = list(jobs)
        self.id = jobs[0].valid.request.extra["batch"]["id"] if jobs else ""

    def cancel(self) -> None:
        for job in reversed(self.jobs):  # the waiting ones first, so none starts while the running one stops
            job.cancel()
