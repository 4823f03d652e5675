"""--parallel N: a video split over N processes (two CPU processes over gloo here) is the video one process makes;
what cannot split is refused up front; stops, dead ranks and shutdowns leave no job hanging and no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from engine import Cancelled, Done, Failed, Frames, GenerationRequest, ModelLoadError, Preview, Ready, Step
from tests.frames import assert_same_video_within_rounding
from tests.loras import lora_tensors, write_lora
from tests.processes import stop_at_first_step
from wan_ui.progress import header_markdown


def request(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a lantern on a jetty", width=64, height=64, frames=9, steps=3, seed=2).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def frames_of(job) -> np.ndarray:
    end = job.wait(300)
    assert isinstance(end, Done), end
    return np.concatenate([e.frames for e in job.history() if isinstance(e, Frames)])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def everything_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("model", ["tiny-t2v-moe", "tiny-ti2v"])
def test_two_processes_make_the_frames_one_process_makes(make_engine, model):
    one = frames_of(make_engine(model).submit(request()))
    two = make_engine(model, parallel=2).submit(request())
    # the attention of each step is summed in another order when its heads are split over two processes
    assert_same_video_within_rounding(one, frames_of(two), "one process against two (Ulysses)")
    assert [e.step for e in two.history() if isinstance(e, Preview)] == [1, 2, 3]  # every step, from rank 0
    assert two.wait(0).settings["parallel"] | {"experts": None} == {
        "degree": 2,
        "kind": "ulysses",
        "backend": "gloo",
        "experts": None,
    }


def test_both_experts_of_a_moe_model_run_split_over_the_two_processes(make_engine):
    done = make_engine("tiny-t2v-moe", parallel=2).submit(request()).wait(300)
    assert isinstance(done, Done), done
    experts = done.settings["parallel"]["experts"]  # what each expert's first block saw on rank 0, this job
    assert set(experts) == {"transformer", "transformer_2"}
    for seen in experts.values():
        assert seen["tokens"] == 3 * 4 * 4 and seen["tokens_on_rank_0"] == seen["tokens"] // 2, experts


def test_a_size_whose_token_count_does_not_divide_by_the_degree_runs(make_engine):
    engine = make_engine("tiny-t2v-moe", parallel=2)
    one = frames_of(make_engine("tiny-t2v-moe").submit(request(width=80, height=48)))
    job = engine.submit(request(width=80, height=48))  # 3 latent frames of 5 x 3 patches: 45 tokens
    assert_same_video_within_rounding(one, frames_of(job), "one process against an uneven split")
    assert job.wait(0).settings["parallel"]["experts"]["transformer"] == {"tokens": 45, "tokens_on_rank_0": 23}


def test_a_degree_that_does_not_divide_the_heads_is_refused_with_what_would_work(make_engine):
    engine = make_engine("tiny-t2v-moe", parallel=3)
    state = engine.state()
    assert state.state == "failed"
    assert "--parallel 3" in state.message and "2 attention heads" in state.message
    assert "--parallel 2" in state.message
    with pytest.raises(ModelLoadError, match="--parallel 3"):
        engine.submit(request())
    assert engine.workers[0].pids() == []  # nothing was started


def test_the_header_says_how_the_video_is_split(make_engine):
    state = make_engine("tiny-ti2v", parallel=2).state()
    assert "Parallel: 2 CPU processes (Ulysses)" in header_markdown(state, 0)
    assert "Parallel" not in header_markdown(make_engine("tiny-ti2v").state(), 0)


def test_stop_mid_job_stops_every_process_and_the_next_job_is_done(make_engine):
    engine = make_engine("tiny-t2v-moe", parallel=2)
    job = engine.submit(request(steps=60))
    assert max(stop_at_first_step(job)) < 60
    assert isinstance(job.wait(0), Cancelled), job.wait(0)
    assert everything_in(engine.outputs) == []
    assert isinstance(engine.submit(request()).wait(300), Done)  # no rank was left waiting in a collective


def test_a_process_killed_mid_job_fails_that_job_with_a_sentence_and_the_next_job_is_done(make_engine):
    engine = make_engine("tiny-t2v-moe", parallel=2)
    job = engine.submit(request(steps=80))
    for event in job.events(timeout=300):
        if isinstance(event, Step) and event.index == 2:
            os.kill(engine.workers[0].pids()[1], signal.SIGKILL)
            break
    end = job.wait(120)
    assert isinstance(end, Failed), end
    assert end.message.startswith("The video could not be finished: process 1 of the parallel group was killed")
    assert "Nothing was saved" in end.message
    assert everything_in(engine.outputs) == []  # not even a hidden partial file
    assert isinstance(engine.submit(request()).wait(300), Done)  # the group was started again


def test_idle_processes_wait_on_their_pipe_not_in_a_collective(make_engine):
    engine = make_engine("tiny-ti2v", parallel=2)
    engine.workers[0].timeout_s = 4  # a collective pending while idle would time out and end the group
    assert isinstance(engine.submit(request()).wait(300), Done)
    pids = engine.workers[0].pids()
    time.sleep(6)
    assert isinstance(engine.submit(request()).wait(300), Done)
    assert engine.workers[0].pids() == pids  # the same group served both


def test_shutting_the_engine_down_leaves_no_process(make_engine):
    engine = make_engine("tiny-ti2v", parallel=2)
    assert isinstance(engine.submit(request()).wait(300), Done)
    pids = engine.workers[0].pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    engine.shutdown()
    assert not any(alive(p) for p in pids)


def test_a_model_not_yet_on_disk_is_fetched_once_before_the_processes_read_it(make_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_STUDIO_CACHE", str(tmp_path / "empty-cache"))  # the ranks inherit it
    job = make_engine("tiny-t2v-moe", parallel=2).submit(request())
    assert isinstance(job.wait(300), Done), job.wait(0)
    assert (tmp_path / "empty-cache" / "tiny").is_dir()


def test_a_lora_on_the_group_gives_the_frames_it_gives_one_process(make_engine, tmp_path):
    write_lora(tmp_path / "loras", "glow", lora_tensors(scale=2.0))
    one = make_engine(loras=tmp_path / "loras").submit(request(loras="glow"))
    two = make_engine(loras=tmp_path / "loras", parallel=2).submit(request(loras="glow"))
    assert_same_video_within_rounding(frames_of(one), frames_of(two), "a LoRA on one process against two")
    assert two.wait(0).settings["loras"][0]["name"] == "glow"


def test_a_model_switch_reloads_every_process_of_the_group(make_engine):
    engine = make_engine("tiny-ti2v", parallel=2)
    assert isinstance(engine.submit(request()).wait(300), Done)
    assert isinstance(engine.load_model("tiny-t2v-moe").wait(300), Ready)
    done = engine.submit(request()).wait(300)
    assert isinstance(done, Done) and done.settings["model"] == "tiny-t2v-moe"
    assert set(done.settings["parallel"]["experts"]) == {"transformer", "transformer_2"}


def test_a_long_video_and_an_extension_run_window_by_window_on_the_group(make_engine, tmp_path):
    from engine import Window

    engine = make_engine("tiny-ti2v", parallel=2)
    long = engine.submit(request(frames=37, prompt="a jetty\nthe tide comes in"))  # a pass makes at most 33
    assert len(frames_of(long)) == 37
    assert [e.index for e in long.history() if isinstance(e, Window)] == [1, 2, 3]  # once each: rank 0 speaks
    extension = engine.submit(request(prompt="night falls", video=long.wait(0).path, frames=12, overlap=5))
    assert len(frames_of(extension)) == 12  # the new frames (the source's are the user's, not sent again)
    assert extension.wait(0).settings["total_frames"] == 37 + 12
    assert extension.wait(0).settings["parallel"]["degree"] == 2


def test_stop_in_a_later_window_stops_every_process_and_the_next_job_is_done(make_engine):
    from engine import Window

    engine = make_engine("tiny-ti2v", parallel=2)
    job = engine.submit(request(frames=41))
    for event in job.events():
        if isinstance(event, Window) and event.index == 2:
            job.cancel()
    assert isinstance(job.wait(0), Cancelled), job.wait(0)
    assert everything_in(engine.outputs) == []
    assert isinstance(engine.submit(request(frames=37)).wait(300), Done)  # no rank was left in a collective
