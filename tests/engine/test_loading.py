"""Catalog, model families and loading: real from_pretrained on saved tiny models; clear errors otherwise."""

from __future__ import annotations

import json
import shutil

import pytest

from engine import Done, Failed, GenerationRequest, Loading, ModelLoadError, Ready, builtin_specs, resolve_spec
from engine.models.tiny import ensure_tiny


def test_catalog_holds_the_official_wan22_defaults():
    specs = builtin_specs()
    ti2v, t2v, i2v = specs["ti2v-5b"], specs["t2v-a14b"], specs["i2v-a14b"]
    assert ti2v.source == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    assert (ti2v.width, ti2v.height, ti2v.frames, ti2v.fps, ti2v.steps, ti2v.guidance, ti2v.shift) == (
        1280,
        704,
        121,
        24,
        50,
        5.0,
        5.0,
    )
    assert ti2v.multiple == 32 and ti2v.boundary is None and not ti2v.moe
    assert (t2v.frames, t2v.fps, t2v.steps, t2v.guidance, t2v.guidance_2, t2v.shift, t2v.boundary) == (
        81,
        16,
        40,
        4.0,
        3.0,
        12.0,
        0.875,
    )
    assert (i2v.guidance, i2v.guidance_2, i2v.shift, i2v.boundary) == (3.5, 3.5, 5.0, 0.9)
    assert t2v.multiple == i2v.multiple == 16 and t2v.moe and i2v.requires_image


def test_catalog_lists_the_tiny_offline_models():
    specs = builtin_specs()
    assert {"tiny-ti2v", "tiny-t2v-moe", "tiny-i2v-moe"} <= set(specs)
    assert all(specs[m].tiny for m in ("tiny-ti2v", "tiny-t2v-moe", "tiny-i2v-moe"))


@pytest.mark.parametrize(
    ("tiny", "family", "moe"),
    [("tiny-ti2v", "ti2v", False), ("tiny-t2v-moe", "t2v", True), ("tiny-i2v-moe", "i2v", True)],
)
def test_a_folder_family_is_read_from_model_index_not_from_its_name(tmp_path, tiny, family, moe):
    folder = tmp_path / "definitely-not-what-you-think"
    shutil.copytree(ensure_tiny(tiny), folder)
    spec = resolve_spec(str(folder))
    assert (spec.family, spec.moe) == (family, moe)


def test_a_local_folder_generates_like_a_catalog_model(tmp_path, make_engine):
    folder = tmp_path / "my-model"
    shutil.copytree(ensure_tiny("tiny-t2v-moe"), folder)
    engine = make_engine(str(folder))
    end = engine.submit(GenerationRequest(prompt="a kite", width=128, height=128, frames=5, steps=2)).wait(60)
    assert isinstance(end, Done)
    assert end.settings["model_source"] == str(folder)


def test_loading_reports_progress_through_each_component(make_engine):
    job = make_engine("tiny-t2v-moe").load_model()
    end = job.wait(60)
    assert isinstance(end, Ready) and end.memory == "none"
    stages = [e.stage for e in job.history() if isinstance(e, Loading)]
    for component in ("text_encoder", "transformer", "transformer_2", "vae"):
        assert f"load {component}" in stages
    fractions = [e.fraction for e in job.history() if isinstance(e, Loading)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_missing_folder_is_refused_with_the_model_named(make_engine, tmp_path):
    engine = make_engine(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError) as info:
        engine.submit(GenerationRequest(prompt="x"))
    assert "nowhere" in str(info.value)
    assert engine.state().state == "failed"


def test_an_uncached_hub_model_offline_says_what_to_do(make_engine):
    engine = make_engine("someone/not-cached-anywhere")
    with pytest.raises(ModelLoadError) as info:
        engine.submit(GenerationRequest(prompt="x"))
    message = str(info.value)
    assert "someone/not-cached-anywhere" in message and "cache" in message and "--model" in message


def test_a_missing_component_is_named(make_engine, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(ensure_tiny("tiny-ti2v"), folder)
    shutil.rmtree(folder / "vae")
    end = make_engine(str(folder)).load_model().wait(60)
    assert isinstance(end, Failed) and end.kind == "model"
    assert "'vae' is missing" in end.message and str(folder) in end.message


def test_corrupt_weights_fail_with_advice(make_engine, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(ensure_tiny("tiny-ti2v"), folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.write_bytes(b"\x00garbage" * 10)
    end = make_engine(str(folder)).load_model().wait(60)
    assert isinstance(end, Failed)
    assert "'transformer' could not be loaded" in end.message and "download the model again" in end.message


def test_a_pipeline_class_we_cannot_run_is_refused(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="StableDiffusionPipeline"):
        resolve_spec(str(folder))


def test_after_a_failed_load_the_user_can_pick_another_model(make_engine, tmp_path):
    engine = make_engine(str(tmp_path / "nowhere"))
    assert isinstance(engine.load_model().wait(60), Failed)
    assert isinstance(engine.load_model("tiny-ti2v").wait(60), Ready)
    assert engine.state().state == "ready"
    end = engine.submit(GenerationRequest(prompt="a fox", steps=2)).wait(60)
    assert isinstance(end, Done)


def test_switching_models_frees_the_old_pipeline_first(make_engine):
    engine = make_engine("tiny-ti2v")
    assert isinstance(engine.load_model().wait(60), Ready)
    old = engine.pipeline
    assert isinstance(engine.load_model("tiny-t2v-moe").wait(60), Ready)
    assert engine.pipeline is not old and engine.spec.id == "tiny-t2v-moe"
