"""Each tiny family end to end through the engine: real diffusers pipelines at tiny size, real MP4 files."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from engine import (
    Decoding,
    Done,
    Frames,
    GenerationRequest,
    Loading,
    Notice,
    Preview,
    Queued,
    Step,
    read_settings,
)
from engine.library.output import to_uint8

from .experts import experts_called

PICTURE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))


def mp4_facts(path: str) -> tuple[int, tuple[int, int], float]:
    reader = imageio_ffmpeg.read_frames(path)
    meta = reader.__next__()
    count = sum(1 for _ in reader)
    return count, tuple(meta["size"]), meta["fps"]


def run(engine, **kw):
    kw.setdefault("prompt", "a paper boat drifts down a rainy street")
    kw.setdefault("seed", 7)
    job = engine.submit(GenerationRequest(**kw))
    events = list(job.events(timeout=120))
    return job, events


@pytest.mark.parametrize(
    ("model", "image", "size"),
    [
        ("tiny-ti2v", None, (64, 64)),
        ("tiny-ti2v", PICTURE, (96, 64)),
        ("tiny-t2v-moe", None, (64, 64)),
        ("tiny-i2v-moe", PICTURE, (96, 64)),
    ],
    ids=["t2v-5b-style", "i2v-5b-style", "t2v-moe", "i2v-moe"],
)
def test_each_family_writes_an_mp4_with_the_right_frames_size_and_fps(make_engine, model, image, size):
    engine = make_engine(model)
    _, events = run(engine, image=image, frames=9, fps=8, width=size[0], height=size[1])
    done = events[-1]
    assert isinstance(done, Done), done
    count, frame_size, fps = mp4_facts(done.path)
    assert count == 9
    assert frame_size == size
    assert fps == pytest.approx(8)


def test_events_come_in_order_and_end_with_done(make_engine):
    _, events = run(make_engine("tiny-ti2v"), steps=4)
    kinds = [type(e) for e in events]
    assert kinds[0] is Queued
    first_step = kinds.index(Step)
    assert all(k in (Queued, Loading, Notice) for k in kinds[:first_step])
    last_step = len(kinds) - 1 - kinds[::-1].index(Step)
    assert all(k in (Frames, Decoding) for k in kinds[last_step + 2 : -1])
    assert kinds[-1] is Done
    assert [e.index for e in events if isinstance(e, Step)] == [1, 2, 3, 4]


def test_a_preview_follows_every_step_by_default(make_engine):
    _, events = run(make_engine("tiny-ti2v"), steps=5)
    assert [e.step for e in events if isinstance(e, Preview)] == [1, 2, 3, 4, 5]


def test_previews_can_be_thinned_to_every_nth_step(make_engine):
    _, events = run(make_engine("tiny-ti2v", preview_every=2), steps=5)
    assert [e.step for e in events if isinstance(e, Preview)] == [2, 4, 5]


def test_preview_shows_every_latent_frame_as_rgb(make_engine):
    _, events = run(make_engine("tiny-t2v-moe"), frames=9, width=96, height=64)
    preview = next(e for e in events if isinstance(e, Preview))
    assert preview.frames.dtype == np.uint8
    assert preview.frames.shape == (3, 8, 12, 3)  # (9 - 1) / 4 + 1 latent frames at 1/8 size


def test_eta_is_known_from_the_first_step(make_engine):
    _, events = run(make_engine("tiny-ti2v"), steps=4)
    steps = [e for e in events if isinstance(e, Step)]
    assert all(s.eta is not None and s.eta >= 0 for s in steps)
    assert steps[-1].eta == 0


def test_decode_streams_every_frame_once_in_order(make_engine):
    _, events = run(make_engine("tiny-ti2v"), frames=13)
    chunks = [e for e in events if isinstance(e, Frames)]
    assert [c.start for c in chunks] == [0, 1, 5, 9]
    assert sum(len(c.frames) for c in chunks) == 13
    decoding = [e for e in events if isinstance(e, Decoding)]
    assert [(d.done, d.total) for d in decoding] == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_the_seed_used_is_reported_when_random(make_engine):
    job, events = run(make_engine("tiny-ti2v"), seed=-1)
    done = events[-1]
    assert job.seed == done.seed == done.settings["request"]["seed"]
    assert 0 <= done.seed <= 2**32 - 1


def test_same_seed_gives_the_same_video(make_engine):
    engine = make_engine("tiny-ti2v")
    a = np.concatenate([e.frames for e in run(engine, seed=11)[1] if isinstance(e, Frames)])
    b = np.concatenate([e.frames for e in run(engine, seed=11)[1] if isinstance(e, Frames)])
    c = np.concatenate([e.frames for e in run(engine, seed=12)[1] if isinstance(e, Frames)])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ti2v_with_an_image_conditions_the_first_frame_on_it(make_engine):
    engine = make_engine("tiny-ti2v")
    _, events = run(engine, image=PICTURE, width=96, height=64)
    first = next(e for e in events if isinstance(e, Frames)).frames[0]
    pipe = engine.pipeline
    # The first latent frame is the encoded image (t = 0); the causal VAE decodes it alone into frame 0.
    with torch.no_grad():
        pixels = pipe.video_processor.preprocess(PICTURE, height=64, width=96).unsqueeze(2)
        latent = pipe.vae.encode(pixels).latent_dist.mode()
        expected = pipe.vae.decode(latent).sample
    expected = pipe.video_processor.postprocess_video(expected, output_type="np")[0][0]
    expected = to_uint8(expected)
    assert np.abs(first.astype(int) - expected.astype(int)).max() <= 1


def test_moe_high_noise_expert_runs_exactly_while_t_is_at_or_above_the_boundary(make_engine):
    engine = make_engine("tiny-t2v-moe")
    run(engine, steps=2)  # load
    pipe = engine.pipeline
    with experts_called(pipe) as calls:
        _, events = run(engine, steps=8, guidance=4.0, guidance_2=2.0)
    boundary = 0.875 * 1000
    assert calls, "no expert ran"
    assert all((expert == "high") == (t >= boundary) for expert, t in calls)
    assert {e for e, _ in calls} == {"high", "low"}
    assert len(calls) == 16  # two passes (with and without the prompt) per step for CFG
    assert (pipe.guidance_scale, pipe._guidance_scale_2) == (4.0, 2.0)
    phases = [(e.phase, e.timestep >= boundary) for e in events if isinstance(e, Step)]
    assert all((phase == "high-noise") == high for phase, high in phases)


def test_settings_round_trip_through_the_json_and_the_mp4(make_engine):
    _, events = run(make_engine("tiny-t2v-moe"), prompt="a lighthouse in a storm", seed=99, steps=3)
    done = events[-1]
    from_json = read_settings(done.path)
    done_path = done.path
    import os

    os.remove(done_path[:-4] + ".json")
    from_mp4 = read_settings(done_path)
    for settings in (from_json, from_mp4):
        assert settings["model"] == "tiny-t2v-moe"
        assert settings["request"] == done.settings["request"]
        assert settings["memory"]["mode"] == "none"
        assert settings["app_version"]
    assert "decode" in from_json["timings"]


def test_a_video_can_be_regenerated_from_its_own_settings(make_engine):
    from engine import request_from_settings

    engine = make_engine("tiny-ti2v")
    _, first = run(engine, seed=5, steps=3)
    again = engine.submit(request_from_settings(read_settings(first[-1].path)))
    second = list(again.events(timeout=60))
    a = np.concatenate([e.frames for e in first if isinstance(e, Frames)])
    b = np.concatenate([e.frames for e in second if isinstance(e, Frames)])
    assert np.array_equal(a, b)


def test_validation_notices_are_emitted_and_saved(make_engine):
    _, events = run(make_engine("tiny-ti2v"), frames=10)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("became 9" in n for n in notices)
    assert events[-1].settings["notices"] == notices
