"""Engine.run_here: one generation outside the worker's queue (how ZeroGPU runs it), same events and output."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Done, GenerationRequest, Queued, RequestError, Step


def test_run_here_makes_the_same_video_events_as_a_queued_job(make_engine):
    engine = make_engine()
    job = engine.run_here(GenerationRequest(prompt="a lamp", seed=8))
    end = job.wait(timeout=120)
    kinds = [type(e) for e in job.history()]
    assert isinstance(end, Done) and Path(end.path).is_file()
    assert kinds[0] is Queued and Step in kinds


def test_run_here_refuses_bad_input_before_starting(make_engine):
    engine = make_engine()
    with pytest.raises(RequestError, match="steps must be at least 1"):
        engine.run_here(GenerationRequest(prompt="a lamp", steps=0))
