"""LoRAs: the library, the choice syntax, recommended settings, attaching per job, and refusing what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Done, Failed, GenerationRequest, RequestError, request_from_settings
from engine.catalog import builtin_specs
from engine.library.loras import LoraLibrary
from tests.loras import lora_tensors, to_wan_layout, write_lora, write_pair

SPECS = builtin_specs()


def frames(engine, **kw) -> np.ndarray:
    events = list(engine.submit(request(**kw)).events(timeout=300))
    assert isinstance(events[-1], Done), events[-1]
    return np.concatenate([e.frames for e in events if hasattr(e, "frames") and e.__class__.__name__ == "Frames"])


def request(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a heron lands on a pond", width=64, height=64, frames=5, steps=2, seed=7).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def finish(engine, **kw):
    return list(engine.submit(request(**kw)).events(timeout=300))[-1]


def peft_layers(module: torch.nn.Module) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "loras"
    write_lora(path, "style", lora_tensors(seed=1), {"models": ["tiny-ti2v", "tiny-t2v-moe"], "triggers": ["zzstyle"]})
    return path


# ----- the library and the choice -------------------------------------------------------------------------------


def test_library_lists_files_pairs_and_their_data(folder):
    write_pair(folder, "duo", lora_tensors(seed=2), lora_tensors(seed=3), {"recommended": {"steps": 4}})
    listing = {item["name"]: item for item in LoraLibrary(folder, presets=folder / "none.json").listing()}
    assert listing["style"]["kind"] == "file"
    assert listing["style"]["triggers"] == ["zzstyle"]
    assert listing["duo"]["kind"] == "pair"
    assert listing["duo"]["recommended"] == {"steps": 4}


def test_published_lightning_loras_are_listed_before_they_are_downloaded(tmp_path):
    listing = {item["name"]: item for item in LoraLibrary(tmp_path / "empty").listing()}
    assert listing["lightning-t2v-a14b"]["downloaded"] is False
    assert listing["lightning-t2v-a14b"]["recommended"]["steps"] == 4
    assert LoraLibrary(tmp_path / "empty").fast_lora(SPECS["t2v-a14b"]) == "lightning-t2v-a14b"
    assert LoraLibrary(tmp_path / "empty").fast_lora(SPECS["i2v-a14b"]) == "lightning-i2v-a14b"


def test_a_distilled_lora_in_the_folder_is_the_fast_choice(folder):
    write_lora(folder, "quick", lora_tensors(seed=5), {"distilled": True, "models": ["tiny-ti2v"]})
    assert LoraLibrary(folder).fast_lora(SPECS["tiny-ti2v"]) == "quick"
    assert LoraLibrary(folder).fast_lora(SPECS["tiny-t2v-moe"]) is None


def test_one_strength_goes_to_both_experts_and_two_to_each(folder):
    library = LoraLibrary(folder)
    (both,) = library.pick("style:0.5", SPECS["tiny-t2v-moe"])
    assert both.strengths == {"transformer": 0.5, "transformer_2": 0.5}
    (each,) = library.pick("style:1:0.25", SPECS["tiny-t2v-moe"])
    assert each.strengths == {"transformer": 1.0, "transformer_2": 0.25}
    assert each.text() == "style:1:0.25"


@pytest.mark.parametrize(
    ("selection", "words"),
    [
        ("nosuch", "There is no LoRA named “nosuch”. LoRAs you can use: "),
        ("style:1:0.5", "this model has one expert"),
        ("style:lots", "must be a number"),
        ("style:99", "between -4 and 4"),
        ("style, style", "chosen twice"),
    ],
)
def test_a_choice_that_cannot_run_is_refused_with_the_studios_sentence(folder, selection, words):
    with pytest.raises(RequestError, match=words):
        LoraLibrary(folder).pick(selection, SPECS["tiny-ti2v"])


def test_a_pair_on_a_single_expert_model_is_refused(folder):
    write_pair(folder, "duo", lora_tensors(seed=2), lora_tensors(seed=3))
    with pytest.raises(RequestError, match="has a single expert"):
        LoraLibrary(folder).pick("duo", SPECS["tiny-ti2v"])


def test_a_lora_made_for_another_model_is_refused_by_its_data(folder):
    with pytest.raises(RequestError, match="made for tiny-ti2v, tiny-t2v-moe"):
        LoraLibrary(folder).pick("style", SPECS["tiny-i2v-moe"])


def test_an_unknown_name_lists_the_loras_that_exist(make_engine, folder):
    engine = make_engine(loras=folder)
    with pytest.raises(RequestError, match="style"):
        engine.submit(request(loras="stlye"))


# ----- recommended settings --------------------------------------------------------------------------------------


def test_recommended_settings_fill_what_the_user_left_unset_and_say_so(make_engine, folder):
    write_lora(folder, "quick", lora_tensors(seed=5), {"recommended": {"steps": 3, "guidance": 1.0, "shift": 3.0}})
    engine = make_engine(loras=folder)
    job = engine.submit(request(loras="quick", steps=None))
    assert (job.valid.request.steps, job.valid.request.guidance, job.valid.request.shift) == (3, 1.0, 3.0)
    assert "Using steps 3, guidance 1, shift 3 recommended by the LoRA quick." in job.notices
    done = job.wait(300)
    assert done.settings["lora_recommended_applied"] == {"steps": 3, "guidance": 1.0, "shift": 3.0}


@pytest.mark.parametrize(
    "meta",
    [
        {"models": ["tiny-ti2v"], "steps": 3, "guidance": 1.0, "shift": 3.0},
        {"models": ["tiny-ti2v"], "recommended": {"steps": 3, "guidance": 1.0, "shift": 3.0}},
    ],
    ids=["at the top level", "under recommended"],
)
def test_recommended_settings_apply_written_at_the_top_level_or_nested(make_engine, folder, meta):
    write_lora(folder, "quick", lora_tensors(seed=5), meta)
    job = make_engine(loras=folder).submit(request(loras="quick", steps=None))
    assert (job.valid.request.steps, job.valid.request.guidance, job.valid.request.shift) == (3, 1.0, 3.0)
    assert job.wait(300).settings["request"]["steps"] == 3


def test_a_typo_in_a_loras_data_is_reported_and_changes_nothing_else(make_engine, folder, caplog):
    write_lora(folder, "quick", lora_tensors(seed=5), {"step": 3, "guidance": "1.0", "shift": 3.0})
    engine = make_engine(loras=folder)
    with caplog.at_level("WARNING", logger="wan_studio.loras"):
        item = next(i for i in engine.list_loras() if i["name"] == "quick")
        engine.list_loras()  # read again: the terminal heard it once
    assert item["usable"] and item["recommended"] == {"shift": 3.0}
    assert "unknown key “step”" in item["problem"] and "did you mean “steps”?" in item["problem"]
    assert '“guidance” must be a number, got "1.0"' in item["problem"]
    assert [r.getMessage().count("step") > 0 for r in caplog.records] == [True]
    job = engine.submit(request(loras="quick", steps=None))
    assert (job.valid.request.steps, job.valid.request.shift) == (4, 3.0)  # the model's steps; the shift applies
    assert isinstance(job.wait(300), Done)


def test_a_lora_whose_json_does_not_parse_stays_usable_and_says_its_data_is_ignored(make_engine, folder):
    (folder / "style.json").write_text('{"models": ["tiny-ti2v"], "triggers": ["zzstyle"],}', encoding="utf-8")
    engine = make_engine(loras=folder)
    item = next(i for i in engine.list_loras() if i["name"] == "style")
    assert item["usable"] and item["triggers"] == []
    assert item["problem"].startswith("style.json is not valid JSON (line 1") and "ignored" in item["problem"]
    assert isinstance(engine.submit(request(loras="style")).wait(300), Done)


def test_a_field_the_user_set_is_never_overridden_by_a_recommendation(make_engine, folder):
    write_lora(folder, "quick", lora_tensors(seed=5), {"recommended": {"steps": 3}})
    job = make_engine(loras=folder).submit(request(loras="quick", steps=2))
    assert job.valid.request.steps == 2
    assert not any("recommended" in n for n in job.notices)
    job.cancel()


def test_a_cfg_free_lora_turns_guidance_off_on_both_experts(make_engine, folder):
    write_lora(folder, "quick", lora_tensors(seed=5), {"recommended": {"guidance": 1.0}})
    job = make_engine("tiny-t2v-moe", loras=folder).submit(request(loras="quick"))
    assert (job.valid.request.guidance, job.valid.request.guidance_2) == (1.0, 1.0)
    job.cancel()


# ----- attaching per job -----------------------------------------------------------------------------------------


def test_a_lora_changes_the_video_and_its_strength_scales_the_change(make_engine, folder):
    engine = make_engine(loras=folder)
    base = frames(engine)
    full = frames(engine, loras="style")
    half = frames(engine, loras="style:0.5")
    change = np.abs(full.astype(int) - base).mean()
    assert change > 1.0
    assert 0 < np.abs(half.astype(int) - base).mean() < change


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda t: to_wan_layout(t), id="wan-lora_A-lora_B"),
        pytest.param(lambda t: to_wan_layout(t, down_up=True), id="wan-lora_down-lora_up"),
        pytest.param(lambda t: to_wan_layout(t, down_up=True, alpha=4), id="wan-with-alpha"),
    ],
)
def test_original_wan_and_comfyui_layouts_give_the_same_video_as_diffusers_layout(make_engine, folder, layout):
    write_lora(folder, "other", layout(lora_tensors(seed=1)))  # rank 4, alpha 4: the same weights
    engine = make_engine(loras=folder)
    # exact: diffusers converts the keys into the same adapter weights, and PEFT runs the same kernels on them
    assert np.array_equal(frames(engine, loras="style"), frames(engine, loras="other"))


def test_alpha_scales_a_lora_as_alpha_over_rank(make_engine, folder):
    write_lora(folder, "halved", to_wan_layout(lora_tensors(seed=1), down_up=True, alpha=2))
    engine = make_engine(loras=folder)
    # exact: alpha/rank and the strength are both a scale of 0.5, a power of two, which rounding never sees
    assert np.array_equal(frames(engine, loras="halved"), frames(engine, loras="style:0.5"))


def test_a_job_without_loras_after_one_with_gives_the_frames_of_before_and_no_adapter_is_left(make_engine, folder):
    engine = make_engine(loras=folder)
    before = frames(engine)
    frames(engine, loras="style")
    assert peft_layers(engine.pipeline.transformer) > 0
    after = frames(engine)
    assert np.array_equal(before, after)  # the same path once the adapter is gone: exactly (a promise to users)
    assert peft_layers(engine.pipeline.transformer) == 0


def test_switching_lora_sets_keeps_the_loaded_model(make_engine, folder):
    write_lora(folder, "second", lora_tensors(seed=9))
    engine = make_engine(loras=folder)
    frames(engine, loras="style")
    pipe, weight = engine.pipeline, engine.pipeline.transformer.blocks[0].attn1.to_q.base_layer.weight.clone()
    events = list(engine.submit(request(loras="second, style:0.3")).events(timeout=300))
    assert isinstance(events[-1], Done)
    assert not any(e.__class__.__name__ == "Loading" and e.stage != "lora" for e in events)
    assert engine.pipeline is pipe
    assert torch.equal(engine.pipeline.transformer.blocks[0].attn1.to_q.base_layer.weight, weight)
    assert set(engine.pipeline.transformer.peft_config) == set(engine._loaded.adapters.attached.values())


def test_two_loras_together_differ_from_each_alone(make_engine, folder):
    write_lora(folder, "second", lora_tensors(seed=9))
    engine = make_engine(loras=folder)
    both = frames(engine, loras="style, second")
    assert not np.array_equal(both, frames(engine, loras="style"))
    assert not np.array_equal(both, frames(engine, loras="second"))


def test_on_moe_a_single_file_goes_into_each_expert_with_its_own_strength(make_engine, folder):
    engine = make_engine("tiny-t2v-moe", loras=folder)
    frames(engine, loras="style:1:0")
    assert peft_layers(engine.pipeline.transformer) > 0
    assert peft_layers(engine.pipeline.transformer_2) == 0
    frames(engine, loras="style:0:1")
    assert peft_layers(engine.pipeline.transformer) == 0
    assert peft_layers(engine.pipeline.transformer_2) > 0


def test_a_pair_puts_its_high_noise_file_in_the_first_expert_and_its_low_noise_file_in_the_second(make_engine, folder):
    high, low = lora_tensors(seed=2), lora_tensors(seed=3)
    write_pair(folder, "duo", high, low)
    engine = make_engine("tiny-t2v-moe", loras=folder)
    frames(engine, loras="duo")
    layer = "blocks.0.attn1.to_q"
    for expert, tensors in ((engine.pipeline.transformer, high), (engine.pipeline.transformer_2, low)):
        module = expert.get_submodule(layer)
        (adapter,) = module.lora_A.keys()
        assert torch.equal(module.lora_A[adapter].weight, tensors[f"transformer.{layer}.lora_A.weight"])


def test_settings_record_each_lora_with_its_files_hash_and_strengths_and_reuse_restores_the_choice(make_engine, folder):
    import hashlib

    engine = make_engine("tiny-t2v-moe", loras=folder)
    done = engine.submit(request(loras="style:0.8:0.6")).wait(300)
    (record,) = done.settings["loras"]
    digest = hashlib.sha256((folder / "style.safetensors").read_bytes()).hexdigest()
    assert record["files"]["file"] == {"file": "style.safetensors", "sha256": digest}
    assert record["strengths"] == {"high": 0.8, "low": 0.6}
    assert request_from_settings(done.settings).loras == "style:0.8:0.6"


# ----- what does not fit is refused before denoising; the model stays as it was ----------------------------------


def _broken(folder, kind: str) -> str:
    if kind == "wrong shapes":
        write_lora(folder, "broken", lora_tensors(seed=4, ffn_dim=40))  # made for a wider FFN
    elif kind == "unknown keys":
        tensors = lora_tensors(seed=4)
        tensors["transformer.blocks.0.attn9.to_q.lora_A.weight"] = torch.zeros(4, 24)
        write_lora(folder, "broken", tensors)
    elif kind == "not safetensors":
        (folder / "broken.safetensors").write_bytes(b"this is not a tensor file at all" * 10)
    elif kind == "pickle named safetensors":
        torch.save(lora_tensors(seed=4), folder / "broken.safetensors")
    elif kind == "unknown layout":
        write_lora(folder, "broken", {"diffusion_model.blocks.0.mystery.lora_A.weight": torch.zeros(4, 24)})
    return "broken"


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("wrong shapes", "it was made for a different model"),
        ("unknown keys", "match no layer of the model"),
        ("not safetensors", "not a readable safetensors file"),
        ("pickle named safetensors", "it is a PyTorch pickle"),
        ("unknown layout", "not a Wan LoRA layout"),
    ],
)
def test_a_lora_that_does_not_fit_is_refused_and_the_model_is_left_as_it_was(make_engine, folder, kind, words):
    engine = make_engine(loras=folder)
    with_style = frames(engine, loras="style")
    attached = dict(engine._loaded.adapters.attached)
    name = _broken(folder, kind)
    failed = finish(engine, loras=f"style, {name}")
    assert isinstance(failed, Failed)
    assert failed.message.startswith("The LoRA broken (broken.safetensors) cannot be used: ")
    assert words in failed.message
    assert not any(e.__class__.__name__ == "Step" for e in engine.submit(request(loras=name)).events(timeout=60))
    assert engine._loaded.adapters.attached == attached
    assert np.array_equal(frames(engine, loras="style"), with_style)


def test_a_pickle_file_is_listed_as_unusable_and_refused_by_name(make_engine, folder):
    torch.save(lora_tensors(seed=4), folder / "old.pt")
    engine = make_engine(loras=folder)
    (item,) = [i for i in engine.list_loras() if i["name"] == "old"]
    assert not item["usable"]
    with pytest.raises(RequestError, match="old.pt is a PyTorch pickle file"):
        engine.submit(request(loras="old"))


def test_a_published_lora_that_is_not_downloaded_is_refused_offline_with_what_to_do(make_engine, tmp_path):
    engine = make_engine("tiny-t2v-moe", loras=tmp_path / "loras", lora_presets=tmp_path / "presets.json")
    (tmp_path / "presets.json").write_text(
        '{"loras": {"net": {"repo": "someone/tiny-lora", "files": {"file": "net.safetensors"}}}}'
    )
    with pytest.raises(RequestError, match="not downloaded yet and the studio is offline"):
        engine.submit(request(loras="net"))
