"""The local backend through the real transformers load-and-generate path, with tiny random-weight Qwen2 and
Qwen2.5-VL models built offline. Their replies are noise: the refiner must bound them and fall back to rules."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from engine import PromptRefiner, RefinerConfig
from engine.refine import count_words, placement_after_use
from engine.refine.tiny import build_tiny_chat_model, build_tiny_vl_model

GIB = 1024**3
PICTURE = Image.new("RGB", (120, 80), (30, 90, 200))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("tiny-refiners")
    return str(build_tiny_chat_model(root / "chat")), str(build_tiny_vl_model(root / "vl"))


def make_refiner(tiny_models, device: str = "cpu", **kw) -> PromptRefiner:
    chat, vl = tiny_models
    kw.setdefault("max_new_tokens", 24)
    config = RefinerConfig(backend="local", local_model=chat, local_vl_model=vl, temperature=0.0, **kw)
    return PromptRefiner(config, device=device)


def test_the_tiny_model_generates_through_the_real_transformers_path(tiny_models):
    refiner = make_refiner(tiny_models)
    text, model, info = refiner.local.complete("You write video prompts.", "Idea: a cat on a beach")
    assert isinstance(text, str) and model == tiny_models[0]
    assert info["timings"]["generate"] > 0 and 1 <= info["new_tokens"] <= 24


def test_generation_stops_at_max_new_tokens(tiny_models):
    refiner = make_refiner(tiny_models, max_new_tokens=5)
    _text, _model, info = refiner.local.complete("You write video prompts.", "Idea: a cat on a beach")
    assert info["new_tokens"] <= 5


def test_generation_stops_at_the_time_limit(tiny_models):
    refiner = make_refiner(tiny_models, max_new_tokens=4000, timeout=0.05)
    _text, _model, info = refiner.local.complete("You write video prompts.", "Idea: a cat on a beach")
    assert info["finish_reason"] == "time" and info["new_tokens"] < 4000


def test_a_cancel_stops_generation(tiny_models):
    refiner = make_refiner(tiny_models, max_new_tokens=4000)
    _text, _model, info = refiner.local.complete("sys", "Idea: a cat", should_stop=lambda: True)
    assert info["finish_reason"] == "cancelled" and info["new_tokens"] <= 2


def test_random_weight_noise_falls_back_to_rules_with_the_reason(tiny_models):
    result = make_refiner(tiny_models).refine("an astronaut plays the violin")
    assert (result.backend, result.fell_back) == ("rules", True)
    assert "The local refiner failed" in result.notice and "no usable prompt" in result.notice
    assert "An astronaut plays the violin." in result.text


def test_the_result_stays_within_the_word_bounds(tiny_models):
    result = make_refiner(tiny_models, max_new_tokens=64).refine("an astronaut plays the violin")
    assert 80 <= count_words(result.text) <= 200


def test_on_cpu_the_model_is_unloaded_after_use(tiny_models):
    refiner = make_refiner(tiny_models)
    refiner.refine("an astronaut plays the violin")
    assert refiner.local.last_placement == "unload"
    assert refiner.local.loaded is None


def test_with_offload_cpu_the_model_stays_in_ram_and_is_not_reloaded(tiny_models):
    refiner = make_refiner(tiny_models, local_offload="cpu")
    first = refiner.local.complete("sys", "Idea: a cat")[2]
    second = refiner.local.complete("sys", "Idea: a cat")[2]
    assert refiner.local.loaded == tiny_models[0]
    assert first["timings"]["load"] > 0 and second["timings"]["load"] == 0.0
    refiner.unload()
    assert refiner.local.loaded is None


def test_the_vision_model_reads_the_image_in_image_to_video(tiny_models):
    refiner = make_refiner(tiny_models, local_offload="cpu")
    _text, model, info = refiner.local.complete("You animate images.", "What should happen: she smiles", PICTURE)
    assert model == tiny_models[1] and info["new_tokens"] >= 1
    assert refiner.local.loaded == tiny_models[1]


def test_image_to_video_with_the_vision_model_falls_back_to_rules_on_noise(tiny_models):
    result = make_refiner(tiny_models).refine("she turns and smiles", image=PICTURE, mode="i2v")
    assert result.fell_back and tiny_models[1] in result.notice
    assert count_words(result.text) <= 120


def test_a_missing_model_falls_back_with_the_reason(tmp_path):
    config = RefinerConfig(backend="local", local_model=str(tmp_path / "no-such-model"))
    result = PromptRefiner(config, device="cpu").refine("a cat walks along the beach")
    assert result.fell_back and "Could not load the local model" in result.notice


@pytest.mark.parametrize(
    ("device", "policy", "video_plan", "free", "expected"),
    [
        ("cuda", "auto", "none", 20 * GIB, "keep"),  # both fit: stay for the next refinement
        ("cuda", "auto", "none", 2 * GIB, "cpu"),  # the video model would lack room for its activations
        ("cuda", "auto", "model", 20 * GIB, "cpu"),  # an offloading video model needs the GPU back
        ("cuda", "auto", None, 20 * GIB, "cpu"),  # no video model yet: it will plan with a free GPU
        ("cuda", "cpu", "none", 20 * GIB, "cpu"),
        ("cuda", "unload", "none", 20 * GIB, "unload"),
        ("cpu", "auto", "none", None, "unload"),  # CPU: give the RAM back to the video model
        ("cpu", "cpu", "none", None, "cpu"),
    ],
)
def test_where_the_model_goes_after_use_follows_the_video_models_plan(device, policy, video_plan, free, expected):
    assert placement_after_use(device, policy, video_plan, free) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_model_runs_in_bf16_and_leaves_the_gpu_without_a_video_model(tiny_models):
    refiner = make_refiner(tiny_models, device="cuda")
    _text, _model, info = refiner.local.complete("sys", "Idea: a cat", video_plan=None)
    assert info["placement"] == "cpu"
    assert refiner.local.model_device.type == "cpu"
    assert next(refiner.local._model.parameters()).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_model_stays_when_the_video_model_fits_beside_it(tiny_models):
    refiner = make_refiner(tiny_models, device="cuda")
    _text, _model, info = refiner.local.complete("sys", "Idea: a cat", video_plan="none")
    assert info["placement"] == "keep"
    assert refiner.local.model_device.type == "cuda"
