"""RefinerConfig from the environment, the masked key, and the metadata a refinement leaves with the video."""

from __future__ import annotations

import json

import pytest

from engine import REFINE_BACKENDS, PromptRefiner, RefinedPrompt, RefinerConfig


def test_the_environment_sets_every_backend():
    config = RefinerConfig.from_env(
        {
            "WAN_REFINE_BACKEND": "local",
            "WAN_REFINE_MODEL": "/models/qwen",
            "WAN_REFINE_VL_MODEL": "/models/qwen-vl",
            "WAN_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
            "WAN_OPENAI_MODEL": "qwen2.5:7b",
            "WAN_OPENAI_API_KEY": "sk-abc",
            "WAN_REFINE_MAX_NEW_TOKENS": "300",
            "WAN_REFINE_TIMEOUT": "20",
        }
    )
    assert (config.backend, config.local_model, config.local_vl_model) == ("local", "/models/qwen", "/models/qwen-vl")
    assert (config.openai_base_url, config.openai_model, config.api_key) == (
        "http://127.0.0.1:11434/v1",
        "qwen2.5:7b",
        "sk-abc",
    )
    assert (config.max_new_tokens, config.timeout) == (300, 20.0)


def test_the_defaults_are_rules_and_the_qwen_models():
    config = RefinerConfig.from_env({})
    assert config.backend == "rules"
    assert (config.local_model, config.local_vl_model) == ("Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct")


def test_a_server_url_alone_makes_openai_the_default():
    assert RefinerConfig.from_env({"WAN_OPENAI_BASE_URL": "http://host/v1"}).backend == "openai"


def test_openai_api_key_is_read_when_the_studio_key_is_absent():
    assert RefinerConfig.from_env({"OPENAI_API_KEY": "sk-fallback"}).api_key == "sk-fallback"


def test_flags_override_the_environment():
    assert RefinerConfig.from_env({"WAN_REFINE_BACKEND": "local"}, backend="openai").backend == "openai"


def test_a_bad_number_in_the_environment_says_which_variable():
    with pytest.raises(ValueError, match="WAN_REFINE_TIMEOUT"):
        RefinerConfig.from_env({"WAN_REFINE_TIMEOUT": "soon"})


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="rules, local, openai"):
        RefinerConfig(backend="magic")


def test_the_api_key_is_masked_in_repr():
    text = repr(RefinerConfig(api_key="sk-very-secret"))
    assert "sk-very-secret" not in text and "api_key='***'" in text


def test_metadata_is_json_and_says_who_wrote_the_prompt():
    result = PromptRefiner(device="cpu").refine("a cat walks along the beach", backend="rules")
    meta = json.loads(json.dumps(result.as_metadata()))
    assert meta["backend"] == "rules" and meta["original"] == "a cat walks along the beach"
    assert meta["text"] == result.text and meta["fell_back"] is False
    assert set(meta) == {"text", "backend", "model", "original", "language", "mode", "style", "fell_back", "notice"}


def test_metadata_has_no_field_for_a_key():
    meta = RefinedPrompt("t", "openai", "o", "en", "t2v", model="m").as_metadata()
    assert not any("key" in name for name in meta)


def test_rules_is_always_available_and_openai_needs_a_server():
    refiner = PromptRefiner(RefinerConfig(), device="cpu")
    assert refiner.available_backends()[0] == "rules"
    assert "openai" not in refiner.available_backends()
    assert "WAN_OPENAI_BASE_URL" in refiner.backend_status()["openai"]
    assert REFINE_BACKENDS == ("rules", "local", "openai")
