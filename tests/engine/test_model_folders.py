"""Model folders as they come: either 5B pipeline class, a folder's own shift and boundary, tiling set per job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Done, Frames, GenerationRequest, Notice, RequestError, read_settings, request_from_settings
from engine.models.memory import GIB, vae_tiling_reason
from engine.models.tiny import build_tiny_pipeline, ensure_tiny

from .experts import experts_called

PICTURE = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8))


def run(engine, **kw) -> list:
    kw.setdefault("prompt", "a heron lands on a pond")
    kw.setdefault("seed", 11)
    kw.setdefault("steps", 2)
    for key, value in dict(width=128, height=128, frames=9, fps=8, negative_prompt="blurry").items():
        kw.setdefault(key, value)  # a folder takes its family's real-model sizes; the tiny weights want tiny ones
    return list(engine.submit(GenerationRequest(**kw)).events(timeout=120))


def frames_of(events: list) -> np.ndarray:
    assert isinstance(events[-1], Done), events[-1]
    return np.concatenate([e.frames for e in events if isinstance(e, Frames)])


@pytest.fixture(scope="module")
def ti2v_as_image_class(tmp_path_factory) -> Path:
    """The tiny 5B saved under WanImageToVideoPipeline, as diffusers' own 5B image-to-video test saves it."""
    from diffusers import WanImageToVideoPipeline

    base = build_tiny_pipeline("tiny-ti2v")
    pipe = WanImageToVideoPipeline(
        **{k: base.components[k] for k in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")},
        transformer_2=None,
        image_processor=None,
        image_encoder=None,
        boundary_ratio=None,
        expand_timesteps=True,
    )
    folder = tmp_path_factory.mktemp("ti2v-i2v-class")
    pipe.save_pretrained(folder, safe_serialization=True)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanImageToVideoPipeline"
    return folder


@pytest.mark.parametrize("with_image", [False, True], ids=["text-to-video", "image-to-video"])
def test_a_5b_saved_under_either_pipeline_class_makes_the_same_video(make_engine, ti2v_as_image_class, with_image):
    size = dict(image=PICTURE if with_image else None, width=192, height=128)  # the picture's 3:2 on both
    as_text_class = frames_of(run(make_engine("tiny-ti2v"), **size))
    as_image_class = frames_of(run(make_engine(str(ti2v_as_image_class)), **size))
    # exact: both folders load through the same reader into the same pipeline view, so the same kernels run
    assert np.array_equal(as_text_class, as_image_class)


def test_a_5b_saved_under_the_image_class_serves_text_then_image_then_text(make_engine, ti2v_as_image_class):
    engine = make_engine(str(ti2v_as_image_class))
    assert engine.spec.family == "ti2v" and engine.spec.text_to_video and engine.spec.accepts_image
    first = frames_of(run(engine))
    frames_of(run(engine, image=PICTURE))
    assert np.array_equal(first, frames_of(run(engine)))


@pytest.mark.parametrize(
    ("model", "kwargs", "field"),
    [("tiny-t2v-moe", {"image": PICTURE}, "image"), ("tiny-i2v-moe", {}, "image")],
    ids=["text-only-family-given-an-image", "image-family-without-an-image"],
)
def test_a_request_the_family_cannot_serve_is_refused_before_queueing(make_engine, model, kwargs, field):
    engine = make_engine(model)
    with pytest.raises(RequestError) as info:
        engine.submit(GenerationRequest(prompt="a kite", **kwargs))
    assert info.value.field == field and "Error" not in str(info.value)
    assert engine.queue_length() == 0


def folder_with(tmp_path: Path, tiny: str, shift: float | None = None, **index_values) -> Path:
    folder = tmp_path / f"{tiny}-custom"
    shutil.copytree(ensure_tiny(tiny), folder)
    if shift is not None:
        path = folder / "scheduler" / "scheduler_config.json"
        config = json.loads(path.read_text())
        config["flow_shift"] = shift
        path.write_text(json.dumps(config))
    if index_values:
        path = folder / "model_index.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **index_values}))
    return folder


def test_a_folder_uses_its_own_shift_and_boundary_and_says_so(make_engine, tmp_path):
    folder = folder_with(tmp_path, "tiny-t2v-moe", shift=7.0, boundary_ratio=0.7)
    engine = make_engine(str(folder))
    assert (engine.spec.shift, engine.spec.boundary) == (7.0, 0.7)
    events = run(engine)
    notices = " ".join(e.message for e in events if isinstance(e, Notice))
    assert "Shift 7 comes from the model folder" in notices and "preset uses 12" in notices
    assert "Expert boundary 0.7 comes from the model folder" in notices
    sampling = events[-1].settings["sampling"]
    assert sampling["scheduler"] == "UniPCMultistepScheduler"
    assert (sampling["shift"], sampling["boundary"], sampling["guidance"], sampling["guidance_2"]) == (
        7.0,
        0.7,
        4.0,
        3.0,
    )
    assert events[-1].settings["request"]["boundary"] == 0.7


def test_the_boundary_used_decides_where_the_experts_switch(make_engine, tmp_path):
    engine = make_engine(str(folder_with(tmp_path, "tiny-t2v-moe", boundary_ratio=0.5)))
    run(engine)  # load
    with experts_called(engine.pipeline) as calls:
        run(engine, steps=8, shift=1.0)  # evenly spaced timesteps: both sides of 500
    assert {e for e, _ in calls} == {"high", "low"}
    assert all((expert == "high") == (t >= 500) for expert, t in calls)


def test_a_folder_stated_guidance_and_steps_are_its_defaults(make_engine, tmp_path):
    folder = folder_with(tmp_path, "tiny-t2v-moe", guidance_scale=1.0, guidance_scale_2=1.0, num_inference_steps=3)
    spec = make_engine(str(folder)).spec
    assert (spec.guidance, spec.guidance_2, spec.steps) == (1.0, 1.0, 3)
    assert set(spec.differs) >= {"guidance", "guidance_2", "steps"}


def test_a_value_the_user_sets_wins_and_its_folder_notice_is_not_said(make_engine, tmp_path):
    engine = make_engine(str(folder_with(tmp_path, "tiny-t2v-moe", shift=7.0)))
    events = run(engine, shift=3.0)
    assert events[-1].settings["sampling"]["shift"] == 3.0
    assert not any("Shift 7" in e.message for e in events if isinstance(e, Notice))


def test_a_catalog_model_keeps_the_catalog_defaults_over_its_scheduler_config(make_engine):
    engine = make_engine("tiny-t2v-moe")
    assert engine.spec.differs == {}
    sampling = run(engine)[-1].settings["sampling"]
    assert (sampling["shift"], sampling["boundary"]) == (12.0, 0.875)


def test_a_video_from_a_folder_is_reproduced_from_its_settings(make_engine, tmp_path):
    engine = make_engine(str(folder_with(tmp_path, "tiny-t2v-moe", shift=7.0, boundary_ratio=0.6)))
    first = run(engine, steps=4)
    again = list(engine.submit(request_from_settings(read_settings(first[-1].path))).events(timeout=120))
    assert again[-1].settings["sampling"]["boundary"] == 0.6
    assert np.array_equal(frames_of(first), frames_of(again))


def test_tiling_is_decided_before_the_pipeline_encodes_the_image(make_engine):
    engine = make_engine("tiny-i2v-moe")
    run(engine, image=PICTURE)  # load
    vae = engine.pipeline.vae
    vae.enable_tiling()  # as a previous job on a smaller card might have left it
    seen: list[bool] = []
    hook = vae.encoder.register_forward_pre_hook(lambda m, a: seen.append(vae.use_tiling))
    try:
        frames_of(run(engine, image=PICTURE))
    finally:
        hook.remove()
    assert seen and not any(seen)  # CPU: nothing to tile; the stale state is gone before the condition encode


def test_the_condition_video_of_an_i2v_job_can_be_the_reason_to_tile():
    cuda = torch.device("cuda")
    # I2V-A14B at 720p: 81 float32 frames to encode; plenty free for the decode alone, not for the encode.
    assert vae_tiling_reason(cuda, 1280, 720, encode_frames=0, free=12 * GIB) is None
    reason = vae_tiling_reason(cuda, 1280, 720, encode_frames=81, free=11 * GIB)
    assert reason is not None and "condition video" in reason
    assert vae_tiling_reason(cuda, 1280, 720, encode_frames=81, free=40 * GIB) is None
    assert vae_tiling_reason(torch.device("cpu"), 1280, 720, encode_frames=81) is None
