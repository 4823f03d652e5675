"""Workers behind the queue: a worker hands back plain data and the studio publishes; two workers run side by side."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import torch

from engine import Done, GenerationRequest, Step, list_videos
from engine.jobs import Job
from engine.library.output import publish
from engine.models.storage import WeightOptions
from engine.run.speed import SpeedOptions
from engine.run.worker import LoadOptions, LocalWorker, RunOptions


def request(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a lantern on a jetty", width=64, height=64, frames=5, steps=3, seed=2).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def test_a_worker_hands_back_an_encoded_video_as_plain_data_and_only_the_studio_gives_it_a_name(make_engine, tmp_path):
    engine = make_engine()  # validates the request the way the studio does before queueing it
    job = Job("generate", engine._validate(request()))
    load = LoadOptions("tiny-ti2v", None, "auto", SpeedOptions(), WeightOptions(), None)
    options = RunOptions(str(tmp_path / "out"), 1, "plain", True, str(tmp_path / "loras"), None)
    (tmp_path / "out").mkdir()
    encoded = LocalWorker(torch.device("cpu")).run(job, load, options)
    assert pickle.loads(pickle.dumps(encoded)) == encoded  # could cross to another process as it is
    assert [p.name for p in (tmp_path / "out").iterdir()] == [encoded.video.partial().name]  # hidden, unnamed
    assert encoded.video.partial().name.startswith(".") and "credentials" not in encoded.settings
    path = publish(encoded.video, encoded.settings)
    assert path.parent == tmp_path / "out" and path.with_suffix(".json").is_file()
    assert not encoded.video.partial().exists()


def test_two_local_workers_run_two_owners_jobs_at_the_same_time_and_both_land_in_the_outputs(make_engine):
    engine = make_engine(workers=2)
    both_inside = threading.Barrier(2, timeout=60)  # each job waits in its first step until the other is there too
    engine.fault_injector = lambda stage: both_inside.wait() if stage == "step 1" else None
    first, second = engine.submit(request(seed=1)), engine.submit(request(seed=2))  # each its own owner
    assert first.owner != second.owner
    ends = [first.wait(120), second.wait(120)]
    assert all(isinstance(end, Done) for end in ends), ends
    for job, seed in ((first, 1), (second, 2)):
        events = job.history()
        assert {e.job_id for e in events} == {job.id} and any(isinstance(e, Step) for e in events)
        assert events[-1].seed == seed
    assert sorted(str(v.path) for v in list_videos(engine.outputs)) == sorted(end.path for end in ends)
    assert all(Path(end.path).with_suffix(".json").is_file() for end in ends)
    assert engine.workers[0].loaded is not engine.workers[1].loaded  # a copy of the model each
