"""Speed options on the tiny pipelines: each applies once at load, a generation still runs, fallbacks say why."""

from __future__ import annotations

import pytest
import torch

from engine import Done, GenerationRequest, Notice, Ready, read_settings
from engine.run.speed import ATTENTION_BACKENDS, SpeedOptions, _missing_package, fp8_storage_supported

FP8_ON_CPU = fp8_storage_supported(torch.device("cpu"))


def generate(engine, **kw):
    job = engine.submit(GenerationRequest(prompt="a kite over a windy beach", seed=3, frames=9, **kw))
    events = list(job.events(timeout=120))
    assert isinstance(events[-1], Done), events[-1]
    return events


@pytest.mark.parametrize(
    "bad",
    [dict(attention_backend="turbo"), dict(cache="every_other_step"), dict(cache_threshold=0.0)],
)
def test_unknown_options_are_refused_at_once(bad):
    with pytest.raises(ValueError):
        SpeedOptions(**bad)


def test_the_defaults_change_nothing_and_are_recorded(make_engine):
    engine = make_engine("tiny-ti2v")
    done = generate(engine)[-1]
    speed = read_settings(done.path)["speed"]
    assert speed["requested"] == SpeedOptions().settings()
    assert speed == {**speed, "attention_backend": "native", "compiled": False, "cache": None, "fp8": False}
    assert speed["notices"] == []


def test_first_block_cache_applies_to_both_experts_and_generates(make_engine):
    engine = make_engine("tiny-t2v-moe", speed=SpeedOptions(cache="first_block", cache_threshold=0.2))
    done = generate(engine)[-1]
    pipe = engine.pipeline
    assert pipe.transformer.is_cache_enabled and pipe.transformer_2.is_cache_enabled
    assert done.settings["speed"]["cache"] == "first_block"
    assert done.settings["speed"]["cache_threshold"] == 0.2


@pytest.mark.skipif(FP8_ON_CPU is not None, reason=f"fp8 storage on this CPU: {FP8_ON_CPU}")
def test_fp8_storage_keeps_transformer_weights_in_float8_and_generates(make_engine):
    engine = make_engine("tiny-t2v-moe", speed=SpeedOptions(fp8=True))
    done = generate(engine)[-1]
    for model in (engine.pipeline.transformer, engine.pipeline.transformer_2):
        ffn = model.blocks[0].ffn.net[0].proj.weight
        assert ffn.dtype == torch.float8_e4m3fn
        assert model.patch_embedding.weight.dtype == torch.float32  # diffusers keeps embeddings and norms
    assert engine.pipeline.text_encoder.dtype == torch.float32  # only the transformers
    assert done.settings["speed"]["fp8"] is True


@pytest.mark.parametrize("backend", ["flash", "flash3", "sage", "cudnn"])
def test_an_unavailable_attention_backend_falls_back_to_native_with_a_notice(make_engine, backend):
    engine = make_engine("tiny-ti2v", speed=SpeedOptions(attention_backend=backend))
    events = generate(engine)
    notices = [e.message for e in events if isinstance(e, Notice)]
    missing = _missing_package(backend)
    expected = f"needs {missing}, which is not installed" if missing else "needs a CUDA GPU"
    assert any(backend in n and expected in n and "native" in n for n in notices), notices
    speed = events[-1].settings["speed"]
    assert speed["attention_backend"] == "native" and speed["requested"]["attention_backend"] == backend
    assert speed["notices"] == notices
    assert ATTENTION_BACKENDS[backend] != "native"


def test_regional_compile_wraps_the_repeated_blocks_and_generates(make_engine):
    # the eager backend traces with dynamo without generating code: checks the wiring in a second on a CPU
    engine = make_engine("tiny-ti2v", speed=SpeedOptions(compile=True, compile_backend="eager"))
    done = generate(engine)[-1]
    blocks = engine.pipeline.transformer.blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert done.settings["speed"]["compiled"] is True


def test_new_speed_options_reload_the_model_with_them(make_engine):
    engine = make_engine("tiny-ti2v")
    assert isinstance(engine.load_model().wait(60), Ready)
    first = engine.pipeline
    end = engine.load_model(speed=SpeedOptions(cache="first_block")).wait(60)
    assert isinstance(end, Ready)
    assert engine.pipeline is not first and engine.pipeline.transformer.is_cache_enabled
    assert engine.speed == SpeedOptions(cache="first_block")
    same = engine.pipeline
    assert isinstance(engine.load_model(speed=SpeedOptions(cache="first_block")).wait(60), Ready)
    assert engine.pipeline is same  # the same options do not reload
