"""Queue, cancel and failure: one worker, jobs in order, and a job that ends badly never stops the next one."""

from __future__ import annotations

import threading

import pytest
import torch

from engine import Cancelled, Decoding, Done, Failed, GenerationRequest, Queued, Step


def request(**kw) -> GenerationRequest:
    kw.setdefault("prompt", "waves crash on black rocks")
    kw.setdefault("seed", 1)
    return GenerationRequest(**kw)


def outputs_of(engine) -> list[str]:
    return sorted(p.name for p in engine.outputs.iterdir()) if engine.outputs.exists() else []


def hold_at_step_1(engine) -> threading.Event:
    """Keep the worker inside the first job's first step until the returned gate is set."""
    gate = threading.Event()
    engine.fault_injector = lambda stage: gate.wait(30) if stage == "step 1" else None
    return gate


def test_jobs_run_one_at_a_time_in_submission_order(make_engine):
    engine = make_engine("tiny-ti2v")
    jobs = [engine.submit(request(seed=i)) for i in range(3)]
    finished = [job.wait(timeout=120) for job in jobs]
    assert all(isinstance(e, Done) for e in finished)
    paths = [e.path for e in finished]
    assert len(set(paths)) == 3
    starts = [e.settings["created"] for e in finished]
    assert starts == sorted(starts)


def test_a_waiting_job_is_told_its_place_in_the_queue(make_engine):
    engine = make_engine("tiny-ti2v")
    gate = hold_at_step_1(engine)
    first = engine.submit(request())
    second = engine.submit(request())
    third = engine.submit(request())
    gate.set()
    third.wait(timeout=120)
    positions = [e.position for e in third.history() if isinstance(e, Queued)]
    assert positions == [2, 1]  # two ahead, then only the running one
    assert isinstance(first.wait(1), Done) and isinstance(second.wait(1), Done)


def test_cancel_during_denoise_stops_within_one_step_and_saves_nothing(make_engine):
    engine = make_engine("tiny-ti2v")
    holder = {}

    def cancel_at_step_2(stage: str) -> None:
        if stage == "step 2":
            holder["job"].cancel()

    engine.fault_injector = cancel_at_step_2
    holder["job"] = engine.submit(request(steps=8))
    end = holder["job"].wait(timeout=60)
    assert isinstance(end, Cancelled)
    steps = [e.index for e in holder["job"].history() if isinstance(e, Step)]
    assert steps == [1, 2]
    assert outputs_of(engine) == []


def test_cancel_during_decode_stops_the_decode_and_leaves_no_file(make_engine):
    engine = make_engine("tiny-ti2v")
    holder = {}
    engine.fault_injector = lambda stage: holder["job"].cancel() if stage == "decoding" else None
    holder["job"] = engine.submit(request(frames=17))
    end = holder["job"].wait(timeout=60)
    assert isinstance(end, Cancelled) and "decod" in end.message
    assert len([e for e in holder["job"].history() if isinstance(e, Decoding)]) == 1
    assert outputs_of(engine) == []  # no video, no hidden partial file


def test_the_next_job_runs_normally_after_a_cancel(make_engine):
    engine = make_engine("tiny-ti2v")
    holder = {}
    engine.fault_injector = lambda stage: holder["job"].cancel() if stage == "step 1" else None
    holder["job"] = engine.submit(request())
    assert isinstance(holder["job"].wait(60), Cancelled)
    engine.fault_injector = None
    assert isinstance(engine.submit(request()).wait(60), Done)


def test_cancelling_a_queued_job_removes_it_before_it_runs(make_engine):
    engine = make_engine("tiny-ti2v")
    gate = hold_at_step_1(engine)
    first = engine.submit(request())
    queued = engine.submit(request())
    queued.cancel()
    gate.set()
    assert isinstance(first.wait(60), Done)
    end = queued.wait(60)
    assert isinstance(end, Cancelled) and "before it started" in end.message
    assert not queued.started.is_set()


@pytest.mark.parametrize("stage", ["step 2", "decoding"])
def test_out_of_memory_fails_the_job_with_advice_and_the_engine_keeps_serving(make_engine, stage):
    engine = make_engine("tiny-ti2v")

    def oom(at: str) -> None:
        if at == stage:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    engine.fault_injector = oom
    end = engine.submit(request()).wait(60)
    assert isinstance(end, Failed) and end.kind == "oom"
    assert "Out of GPU memory" in end.message and ("size" in end.message and "frames" in end.message)
    assert outputs_of(engine) == []
    engine.fault_injector = None
    assert isinstance(engine.submit(request()).wait(60), Done)


def test_an_unexpected_error_fails_only_that_job_and_keeps_python_out_of_the_message(make_engine, caplog):
    engine = make_engine("tiny-ti2v")

    def boom(at: str) -> None:
        if at == "step 1":
            raise RuntimeError("kaboom")

    engine.fault_injector = boom
    with caplog.at_level("INFO", logger="wan_studio.engine"):
        end = engine.submit(request()).wait(60)
    assert isinstance(end, Failed) and "denois" in end.message
    assert "kaboom" not in end.message and "RuntimeError" not in end.message and "terminal" in end.message
    logged = [r for r in caplog.records if "kaboom" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is None  # one line in the log, no traceback
    engine.fault_injector = None
    assert isinstance(engine.submit(request()).wait(60), Done)


def test_two_videos_with_the_same_prompt_and_seed_never_overwrite_each_other(make_engine):
    engine = make_engine("tiny-ti2v")
    a = engine.submit(request(seed=3)).wait(60)
    b = engine.submit(request(seed=3)).wait(60)
    assert a.path != b.path
    assert len([n for n in outputs_of(engine) if n.endswith(".mp4")]) == 2


def test_a_slow_reader_can_skip_stale_previews(make_engine):
    engine = make_engine("tiny-ti2v")
    job = engine.submit(request(steps=6))
    job.wait(60)
    every = [e.step for e in job.events() if type(e).__name__ == "Preview"]
    latest = [e.step for e in job.events(latest_preview_only=True) if type(e).__name__ == "Preview"]
    assert every == [1, 2, 3, 4, 5, 6]
    assert latest == [6]
