"""Variations: takes planned from one request, queued as ordinary jobs in turn with other clients, marked, exported."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest

from engine import (
    Cancelled,
    Done,
    GenerationRequest,
    RequestError,
    export_batch,
    find_video,
    in_batches,
    list_videos,
    plan_takes,
    set_mark,
)


def base(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a heron lands on a pond", width=64, height=64, frames=5, steps=2).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def finish(batch) -> list:
    return [job.wait(300) for job in batch.jobs]


def frames_of(job) -> np.ndarray:
    return np.concatenate([e.frames for e in job.history() if e.__class__.__name__ == "Frames"])


# ----- planning the takes (pure) ---------------------------------------------------------------------------------


def test_a_seed_batch_has_distinct_random_seeds_and_one_wording():
    takes = plan_takes(base(), count=8)
    assert len({t.seed for t in takes}) == 8
    assert {t.prompt for t in takes} == {"a heron lands on a pond"}
    assert [t.extra["batch"]["index"] for t in takes] == list(range(1, 9))
    assert {t.extra["batch"]["varied"] for t in takes} == {"seeds"}


def test_consecutive_seeds_count_up_from_the_given_seed():
    assert [t.seed for t in plan_takes(base(seed=41), count=3, seeds="consecutive")] == [41, 42, 43]


def test_a_wording_batch_gives_every_line_the_same_seed():
    takes = plan_takes(base(seed=-1), prompts="a red fox\n\n  a grey wolf  \na black cat")
    assert [t.prompt for t in takes] == ["a red fox", "a grey wolf", "a black cat"]
    assert len({t.seed for t in takes}) == 1
    assert takes[0].extra["batch"]["varied"] == "wordings"


def test_both_varies_the_wording_and_the_seed():
    takes = plan_takes(base(), prompts="a red fox\na grey wolf", vary="both")
    assert [t.prompt for t in takes] == ["a red fox", "a grey wolf"]
    assert takes[0].seed != takes[1].seed


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        ({"count": 1}, "count", "between 2 and 8"),
        ({"count": 9}, "count", "between 2 and 8"),
        ({"count": 2.5}, "count", "whole number"),
        ({}, "count", "how many takes"),
        ({"prompts": "   \n \n"}, "prompts", "only blank lines"),
        ({"prompts": "\n".join(f"take {i}" for i in range(9))}, "prompts", "at most 8"),
        ({"prompts": "a\nb\nc", "count": 2}, "count", "leave count out"),
        ({"count": 3, "vary": "colours"}, "vary", "seeds, wordings, both"),
    ],
)
def test_bad_batch_input_is_refused_with_the_field_and_what_to_do(kwargs, field, words):
    with pytest.raises(RequestError, match=words) as refused:
        plan_takes(base(), **kwargs)
    assert refused.value.field == field


# ----- running them -----------------------------------------------------------------------------------------------


def test_a_seed_batch_makes_distinct_videos_each_recording_its_take(make_engine):
    engine = make_engine()
    batch = engine.submit_batch(plan_takes(base(), count=3))
    ends = finish(batch)
    assert all(isinstance(e, Done) for e in ends)
    assert len({e.seed for e in ends}) == 3
    videos = [frames_of(job) for job in batch.jobs]
    assert not np.array_equal(videos[0], videos[1]) and not np.array_equal(videos[1], videos[2])
    records = [e.settings["batch"] for e in ends]
    assert [r["index"] for r in records] == [1, 2, 3]
    assert {r["id"] for r in records} == {batch.id} and {r["count"] for r in records} == {3}


def test_a_wording_batch_records_one_seed_and_each_wording(make_engine):
    engine = make_engine()
    ends = finish(engine.submit_batch(plan_takes(base(), prompts="a red fox\na grey wolf")))
    assert ends[0].seed == ends[1].seed
    assert [e.settings["request"]["prompt"] for e in ends] == ["a red fox", "a grey wolf"]


def test_a_batch_with_a_bad_value_queues_nothing(make_engine):
    engine = make_engine()
    with pytest.raises(RequestError, match="width"):
        engine.submit_batch(plan_takes(base(width=7), count=3))
    assert engine.queue_length() == 0
    assert list_videos(engine.outputs) == []


def test_stop_mid_batch_keeps_the_finished_takes_and_leaves_no_partial_files(make_engine):
    engine = make_engine()
    batch = engine.submit_batch(plan_takes(base(steps=4), count=4))
    first = batch.jobs[0].wait(300)
    batch.cancel()
    ends = [first, *(job.wait(300) for job in batch.jobs[1:])]
    finished = [e for e in ends if isinstance(e, Done)]
    assert isinstance(first, Done)
    assert any(isinstance(e, Cancelled) for e in ends)
    on_disk = sorted(p.name for p in engine.outputs.iterdir() if p.is_file())
    assert not [n for n in on_disk if n.startswith(".")]
    assert sorted(str(v.path) for v in list_videos(engine.outputs)) == sorted(e.path for e in finished)


def test_two_clients_batches_take_turns_in_the_queue(make_engine):
    engine = make_engine()
    a = engine.submit_batch(plan_takes(base(prompt="client a"), count=3), owner="a")
    b = engine.submit_batch(plan_takes(base(prompt="client b"), count=3), owner="b")
    finish(a), finish(b)
    oldest_first = sorted(list_videos(engine.outputs), key=lambda v: v.path.stat().st_mtime_ns)
    assert [v.prompt[-1] for v in oldest_first] == ["a", "b", "a", "b", "a", "b"]


# ----- marks and export ------------------------------------------------------------------------------------------


def test_marks_are_stored_with_the_settings_and_survive_a_restart(make_engine):
    engine = make_engine()
    ends = finish(engine.submit_batch(plan_takes(base(), count=2)))
    set_mark(engine.outputs, ends[0].path, "kept")
    set_mark(engine.outputs, ends[1].path, "rejected")
    engine.shutdown()
    again = make_engine()  # a new studio on the same folder reads the marks from disk
    assert find_video(again.outputs, ends[0].path).mark == "kept"
    assert find_video(again.outputs, ends[1].path).mark == "rejected"
    set_mark(again.outputs, ends[1].path, None)
    assert find_video(again.outputs, ends[1].path).mark is None
    assert json.loads(open(ends[0].path[:-4] + ".json").read())["mark"] == "kept"


def test_marking_a_video_not_in_the_outputs_folder_is_refused(make_engine, tmp_path):
    engine = make_engine()
    with pytest.raises(RequestError, match="not in the outputs folder"):
        set_mark(engine.outputs, tmp_path / "elsewhere.mp4", "kept")
    with pytest.raises(RequestError, match="kept, rejected or none"):
        set_mark(engine.outputs, tmp_path / "elsewhere.mp4", "maybe")


def test_the_gallery_lists_a_batchs_takes_together_in_take_order(make_engine):
    engine = make_engine()
    batch = engine.submit_batch(plan_takes(base(), count=3))
    finish(batch)
    finish(engine.submit_batch(plan_takes(base(prompt="later"), count=2)))
    listed = in_batches(list_videos(engine.outputs))
    assert [v.batch["index"] for v in listed if v.batch["id"] == batch.id] == [1, 2, 3]
    assert listed[0].prompt == "later"  # the newest batch first


def test_export_holds_the_kept_takes_and_a_sheet_of_their_settings(make_engine, tmp_path):
    engine = make_engine()
    batch = engine.submit_batch(plan_takes(base(), count=3))
    ends = finish(batch)
    with pytest.raises(RequestError, match="marked kept"):
        export_batch(engine.outputs, batch.id, tmp_path / "exports")
    set_mark(engine.outputs, ends[0].path, "kept")
    set_mark(engine.outputs, ends[2].path, "kept")
    set_mark(engine.outputs, ends[1].path, "rejected")
    target = export_batch(engine.outputs, batch.id, tmp_path / "exports")
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        rows = list(csv.DictReader(io.StringIO(archive.read("settings.csv").decode())))
        full = json.loads(archive.read("settings.json"))
        kept_bytes = archive.read(ends[0].path.rsplit("/", 1)[1])
    kept = {ends[0].path.rsplit("/", 1)[1], ends[2].path.rsplit("/", 1)[1]}
    assert names == kept | {"settings.csv", "settings.json"}
    assert {r["file"] for r in rows} == kept and {r["take"] for r in rows} == {"1/3", "3/3"}
    assert {r["seed"] for r in rows} == {str(ends[0].seed), str(ends[2].seed)}
    assert {item["settings"]["batch"]["id"] for item in full} == {batch.id}
    assert kept_bytes == open(ends[0].path, "rb").read()
    second = export_batch(engine.outputs, batch.id, tmp_path / "exports")
    assert second != target and target.exists()  # an export never overwrites an earlier one


def test_rules_refinement_variants_are_distinct_and_repeatable():
    from engine.refine.rules import refine_with_rules

    texts = [refine_with_rules("a lighthouse at dusk", "en", "t2v", None, v)[0] for v in range(4)]
    assert len(set(texts)) == 4
    assert texts[1] == refine_with_rules("a lighthouse at dusk", "en", "t2v", None, 1)[0]
    assert texts[0] == refine_with_rules("a lighthouse at dusk", "en", "t2v")[0]  # variant 0 is the usual one


def test_a_take_reused_from_its_settings_is_a_single_request(make_engine):
    from engine import request_from_settings

    engine = make_engine()
    end = finish(engine.submit_batch(plan_takes(base(), count=2)))[1]
    again = request_from_settings(end.settings)
    assert "batch" not in again.extra and again.seed == end.seed
    assert run_single(engine, again).settings["batch"] is None


def run_single(engine, request):
    return engine.submit(request).wait(300)


def test_turns_alternate_between_owners_and_keep_each_owners_order():
    from engine.jobs import Job, turn_order

    def job(owner: str) -> Job:
        made = Job("generate")
        made.owner = owner
        return made

    a1, a2, a3, b1, b2, c1 = job("a"), job("a"), job("a"), job("b"), job("b"), job("c")
    assert turn_order([a1, a2, a3, b1, b2, c1], {}) == [a1, b1, c1, a2, b2, a3]
    assert turn_order([a2, a3, b1], {"a": 1}) == [b1, a2, a3]  # a was just served: b goes first


def test_a_new_clients_job_is_told_it_starts_before_a_waiting_batch(make_engine):
    import threading

    from engine import Queued

    engine = make_engine()
    running, release = threading.Event(), threading.Event()

    def hold_the_first_job(stage: str) -> None:
        if stage == "load" and not running.is_set():
            running.set()
            release.wait(60)

    engine.fault_injector = hold_the_first_job
    batch = engine.submit_batch(plan_takes(base(prompt="client a"), count=3), owner="a")
    assert running.wait(60)  # take 1 runs, takes 2 and 3 wait
    single = engine.submit(base(prompt="client b"))
    positions = lambda job: [e.position for e in job.history() if isinstance(e, Queued)]  # noqa: E731
    assert positions(single) == [1]  # only the running take is ahead of it
    assert positions(batch.jobs[1])[-1] == 2 and positions(batch.jobs[2])[-1] == 3
    release.set()
    finish(batch), single.wait(300)
    oldest_first = sorted(list_videos(engine.outputs), key=lambda v: v.path.stat().st_mtime_ns)
    assert [v.prompt[-1] for v in oldest_first] == ["a", "b", "a", "a"]
