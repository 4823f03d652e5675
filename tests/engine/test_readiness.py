"""What the studio says about a model before anyone waits: it cannot load here, or it will crawl without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import GenerationRequest, ModelLoadError, builtin_specs, validate
from engine.models.readiness import advice, cannot_load


def test_a_hub_model_not_downloaded_while_offline_cannot_load(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = cannot_load(builtin_specs()["t2v-a14b"])
    assert problem is not None and "not downloaded" in str(problem) and "--model" in str(problem)


def test_a_tiny_model_can_always_load():
    assert cannot_load(builtin_specs()["tiny-ti2v"]) is None


def test_a_real_model_without_cuda_is_said_to_be_impractical_before_any_job():
    text = advice(builtin_specs()["ti2v-5b"], torch.device("cpu"))
    assert "no CUDA GPU" in text and "hours" in text
    assert advice(builtin_specs()["tiny-ti2v"], torch.device("cpu")) == ""


def test_the_engine_refuses_such_a_model_at_submit_and_reports_it_failed(make_engine):
    engine = make_engine("ti2v-5b")
    state = engine.state()
    assert state.state == "failed" and "not downloaded" in state.message
    with pytest.raises(ModelLoadError, match="not downloaded"):
        engine.submit(GenerationRequest(prompt="a fox"))
    assert engine.queue_length() == 0


def test_the_hub_cache_is_asked_once_until_it_changes_and_a_download_is_then_seen(make_engine, monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    asked = []
    real = huggingface_hub.try_to_load_from_cache
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: asked.append(a) or real(*a, **k))
    engine = make_engine("ti2v-5b")
    for _ in range(20):  # ten seconds of one open page's polling
        assert engine.state().state == "failed"
    assert len(asked) == 1
    repo = tmp_path / "hub" / "models--Wan-AI--Wan2.2-TI2V-5B-Diffusers"  # a download lands in the cache
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert engine.state().state != "failed" and len(asked) == 2


def test_an_image_whose_shape_the_model_sizes_cannot_keep_gets_a_notice():
    four_by_three = Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8))
    valid = validate(GenerationRequest(prompt="a dog", image=four_by_three), builtin_specs()["tiny-ti2v"])
    assert (valid.request.width, valid.request.height) == (64, 64)
    assert any("will not keep its shape" in n for n in valid.notices)
    larger = validate(
        GenerationRequest(prompt="a dog", image=four_by_three, width=256, height=192), builtin_specs()["tiny-ti2v"]
    )
    assert not any("will not keep its shape" in n for n in larger.notices)
