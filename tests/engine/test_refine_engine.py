"""Refinement through the Engine: the local backend queues with video jobs, rules and openai do not wait, and the
refined prompt travels into the video's settings."""

from __future__ import annotations

import json
import threading

import pytest

from engine import Cancelled, Done, Failed, GenerationRequest, PromptRefiner, Queued, Refined, RefinerConfig
from engine.refine.tiny import build_tiny_chat_model


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory) -> str:
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny-refiner") / "chat"))


def local_refiner(path: str) -> PromptRefiner:
    config = RefinerConfig(backend="local", local_model=path, max_new_tokens=16, temperature=0.0)
    return PromptRefiner(config, device="cpu")


def hold_at_step_1(engine) -> threading.Event:
    gate = threading.Event()
    engine.fault_injector = lambda stage: gate.wait(30) if stage == "step 1" else None
    return gate


def video(**kw) -> GenerationRequest:
    kw.setdefault("prompt", "a cat walks along the beach")
    return GenerationRequest(seed=3, frames=5, width=64, height=64, **kw)


def test_rules_refinement_finishes_while_a_video_job_holds_the_worker(make_engine):
    engine = make_engine("tiny-ti2v")
    gate = hold_at_step_1(engine)
    generating = engine.submit(video())
    try:
        end = engine.refine(PromptRefiner(device="cpu"), "a cat walks along the beach").wait(timeout=30)
        assert isinstance(end, Refined) and end.result.backend == "rules"
        assert not generating.finished
    finally:
        gate.set()
    assert isinstance(generating.wait(timeout=120), Done)


def test_local_refinement_waits_behind_a_video_job(make_engine, tiny_chat):
    engine = make_engine("tiny-ti2v")
    gate = hold_at_step_1(engine)
    generating = engine.submit(video())
    refining = engine.refine(local_refiner(tiny_chat), "an astronaut plays the violin")
    assert [e.position for e in refining.history() if isinstance(e, Queued)] == [1]
    assert not refining.started.wait(0.3)  # the video job holds the worker
    gate.set()
    end = refining.wait(timeout=120)
    assert isinstance(generating.wait(timeout=1), Done)
    assert isinstance(end, Refined) and end.result.fell_back  # tiny random weights: rules took over


def test_local_refinement_on_the_worker_unloads_the_model_on_cpu(make_engine, tiny_chat):
    engine = make_engine("tiny-ti2v")
    refiner = local_refiner(tiny_chat)
    assert isinstance(engine.refine(refiner, "an astronaut plays the violin").wait(timeout=120), Refined)
    assert refiner.local.last_placement == "unload" and refiner.local.loaded is None


def test_an_empty_prompt_fails_the_refine_job_with_the_reason(make_engine):
    engine = make_engine("tiny-ti2v")
    end = engine.refine(PromptRefiner(device="cpu"), "  ").wait(timeout=30)
    assert isinstance(end, Failed) and end.kind == "request" and "Type an idea" in end.message


def test_a_queued_local_refinement_can_be_cancelled(make_engine, tiny_chat):
    engine = make_engine("tiny-ti2v")
    gate = hold_at_step_1(engine)
    generating = engine.submit(video())
    refining = engine.refine(local_refiner(tiny_chat), "an astronaut plays the violin")
    refining.cancel()
    gate.set()
    assert isinstance(refining.wait(timeout=120), Cancelled)
    assert isinstance(generating.wait(timeout=120), Done)


def test_the_refined_prompt_and_the_original_are_saved_with_the_video(make_engine):
    engine = make_engine("tiny-ti2v")
    result = engine.refine(PromptRefiner(device="cpu"), "a cat walks along the beach").wait(timeout=30).result
    extra = {"refined_prompt": result.as_metadata(), "original_prompt": result.original}
    done = engine.submit(video(prompt=result.text, extra=extra)).wait(timeout=120)
    assert isinstance(done, Done)
    saved = json.loads(json.dumps(done.settings))["request"]
    assert saved["prompt"] == result.text
    assert saved["extra"]["original_prompt"] == "a cat walks along the beach"
    assert saved["extra"]["refined_prompt"]["backend"] == "rules"
