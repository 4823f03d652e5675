"""A pool of workers on Ray (a local instance on 127.0.0.1, or a cluster the test starts): jobs run side by side,
every video lands signed in the studio's outputs with its worker recorded, a worker killed mid-job costs one rerun,
and a cluster that goes away is said and refused, not waited on."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import Cancelled, Done, Failed, GenerationRequest, Notice, Step, list_videos, plan_takes
from engine.errors import WorkersUnavailable
from tests.processes import descendants, running, stop_at_first_step
from wan_ui.progress import header_markdown

ray = pytest.importorskip("ray")


def request(**kw) -> GenerationRequest:
    """A tiny job; at 256x256x33 and 100 steps (the most the tiny model takes) one runs about 2.5 s."""
    for key, value in dict(prompt="a lantern on a jetty", width=64, height=64, frames=9, steps=3, seed=2).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two CPU workers on a local Ray instance the engine starts (and stops)."""
    from engine import Engine

    engine = Engine(model="tiny-ti2v", outputs=tmp_path_factory.mktemp("pool-outputs"), workers=2, cluster="local")
    yield engine
    engine.shutdown()


def test_two_owners_jobs_run_at_the_same_time_on_two_workers_and_land_signed(pool):
    seen: dict[str, float] = {}

    def follow(name: str, job) -> None:
        for event in job.events(timeout=300):
            if isinstance(event, Step):
                seen.setdefault(f"{name} first step", time.monotonic())
        seen[f"{name} end"] = time.monotonic()

    first, second = pool.submit(request(steps=30, seed=1)), pool.submit(request(steps=30, seed=2))
    threads = [threading.Thread(target=follow, args=pair) for pair in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    ends = [first.wait(0), second.wait(0)]
    assert all(isinstance(end, Done) for end in ends), ends
    assert seen["second first step"] < seen["first end"] and seen["first first step"] < seen["second end"]
    assert {end.settings["worker"]["index"] for end in ends} == {1, 2}
    assert all(end.settings["worker"]["host"] and end.settings["credentials"]["signed"] for end in ends)
    assert sorted(str(v.path) for v in list_videos(pool.outputs)) >= sorted(end.path for end in ends)


def test_four_takes_of_a_batch_use_both_workers(pool):
    batch = pool.submit_batch(plan_takes(request(seed=10), count=4, seeds="consecutive"))
    ends = [job.wait(300) for job in batch.jobs]
    assert all(isinstance(end, Done) for end in ends), ends
    assert {end.settings["worker"]["index"] for end in ends} == {1, 2}


def test_an_extension_runs_on_a_worker_that_reads_the_source_from_the_job_not_the_disk(pool, tmp_path):
    import numpy as np

    from tests.frames import write_video

    source = write_video(tmp_path / "shot.mp4", np.full((12, 64, 64, 3), 120, np.uint8))
    job = pool.submit(request(prompt="the tide comes in", video=source, frames=8))
    os.unlink(source)  # the worker has the bytes the job carries; the file itself is no longer needed
    end = job.wait(300)
    assert isinstance(end, Done), end
    assert end.settings["total_frames"] == 20 and end.settings["worker"]["index"] in (1, 2)
    assert end.settings["credentials"]["parent"] == "shot.mp4"


def test_the_header_says_how_many_workers_are_busy_on_how_many_machines(pool):
    assert isinstance(pool.submit(request()).wait(300), Done)
    state = pool.state()
    assert state.pool.startswith("Workers: ") and "of 2 busy (1 machine)" in state.pool
    assert len(state.pool_workers) == 2 and state.pool_workers[0].startswith("Worker 1 (")
    assert "Workers: " in header_markdown(state, 0)


def test_stop_reaches_the_worker_and_nothing_is_saved(pool):
    job = pool.submit(request(steps=80, seed=4))
    assert max(stop_at_first_step(job)) < 80
    assert isinstance(job.wait(0), Cancelled), job.wait(0)
    assert hidden_files(pool.outputs) == [] and not [v for v in list_videos(pool.outputs) if v.seed == 4]


def test_a_worker_killed_mid_job_costs_one_rerun_and_nothing_partial(pool):
    job = pool.submit(request(steps=100, seed=5, width=256, height=256, frames=33))
    for event in job.events(timeout=300):
        if isinstance(event, Step) and event.index == 2:
            index = pool.pool.where[job.id]
            os.kill(pool.pool.pids[job.id], signal.SIGKILL)  # the process that runs it now
            break
    end = job.wait(300)
    assert isinstance(end, Done), end
    said = [e.message for e in job.history() if isinstance(e, Notice)]
    assert any("stopped while running it" in m and "runs again" in m for m in said), said
    assert end.settings["worker"]["index"] != index + 1  # the other worker made it
    assert hidden_files(pool.outputs) == []
    assert isinstance(pool.submit(request(seed=6)).wait(300), Done)


def test_a_job_whose_worker_dies_twice_fails_with_a_sentence_and_the_next_job_is_done(pool):
    job = pool.submit(request(steps=100, seed=7, width=256, height=256, frames=33))
    kills = 0
    for event in job.events(timeout=300):
        if isinstance(event, Step) and event.index == 2:
            os.kill(pool.pool.pids[job.id], signal.SIGKILL)  # the process that runs it now
            kills += 1
            if kills == 2:
                break
    end = job.wait(300)
    assert isinstance(end, Failed), end
    assert end.message.startswith("The video could not be made: worker") and end.message.endswith(
        "again. Nothing was saved."
    )
    assert hidden_files(pool.outputs) == []
    assert isinstance(pool.submit(request(seed=8)).wait(300), Done)  # Ray started the workers again


def test_shutting_the_engine_down_leaves_no_ray_process_it_started(tmp_path):
    from engine import Engine

    engine = Engine(model="tiny-ti2v", outputs=tmp_path / "outputs", workers=2, cluster="local")
    assert isinstance(engine.submit(request()).wait(300), Done)
    started = descendants(engine.pool._proc.pid) | {engine.pool._proc.pid}
    assert len(started) > 3  # the driver, Ray's own servers and the two workers
    engine.shutdown()
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if running(pid)]


def test_joining_a_cluster_and_losing_it_is_said_and_refused_not_waited_on(tmp_path, monkeypatch):
    from engine import Engine

    port = _free_port()
    token = secrets.token_hex(32)  # the team's cluster token
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port)]
        + ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    engine = None
    try:
        engine = Engine(model="tiny-ti2v", outputs=tmp_path / "outputs", workers=1, cluster=f"127.0.0.1:{port}")
        done = engine.submit(request()).wait(300)
        assert isinstance(done, Done), done
        assert done.settings["worker"]["index"] == 1
        os.killpg(head.pid, signal.SIGTERM)  # the cluster goes away
        head.wait(60)
        deadline = time.monotonic() + 60
        while "cannot be reached" not in engine.state().pool and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "The Ray cluster at 127.0.0.1" in engine.state().pool and "cannot be reached" in engine.state().pool
        started = time.monotonic()
        with pytest.raises(WorkersUnavailable, match="cannot be reached"):
            engine.submit(request())
        assert time.monotonic() - started < 5  # refused at once
        assert "cannot be reached" in header_markdown(engine.state(), 0)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
        if engine is not None:
            engine.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
