"""Host RAM in the plan: where each component lives, decided from published sizes; disk streaming for real."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Done, Frames, GenerationRequest, ModelLoadError, builtin_specs
from engine.models.memory import load_peaks, plan_memory
from engine.models.placement import GIB, RAM_HEADROOM_BYTES, plan_placement
from tests.frames import assert_same_video_within_rounding

CUDA = torch.device("cuda")
# Published component sizes as the studio loads them (bf16 transformers and text encoder, float32 VAE), in GiB:
# umT5-XXL encoder 10.6, TI2V-5B DiT 9.3 with the Wan2.2 VAE 2.6, each A14B expert 26.6 with the Wan2.1 VAE 0.5.
SIZES = {
    "ti2v-5b": {"text_encoder": 10.6, "transformer": 9.3, "vae": 2.6},
    "t2v-a14b": {"text_encoder": 10.6, "transformer": 26.6, "transformer_2": 26.6, "vae": 0.5},
    "i2v-a14b": {"text_encoder": 10.6, "transformer": 26.6, "transformer_2": 26.6, "vae": 0.5},
}
SHARD = 4.4  # GiB: the A14B Diffusers repos store each fp32 expert in 12 shards of about 4.75 GB
# What a host of this size typically has available with a desktop running (the OS and apps take the rest).
HOSTS = {"64 GB": 58, "128 GB": 120}
CARDS = (24, 48, 80)


def plan(model: str, host: str, card: int, requested: str = "auto"):
    spec = builtin_specs()[model]
    sizes = {n: int(g * GIB) for n, g in SIZES[model].items()}
    size = (spec.width, spec.height, spec.frames)
    mode = plan_memory(requested, CUDA, sizes, card * GIB, spec.moe, model=model, size=size, peaks=load_peaks())
    return plan_placement(
        mode.mode,
        "cuda",
        sizes,
        int(HOSTS[host] * GIB),
        spec.moe,
        vram_free=card * GIB,
        largest_file=int(SHARD * GIB),
        disk_free=2000 * GIB,
        model=model,
    )


def ram_held(placement, model: str) -> float:
    return sum(SIZES[model][n] for n, w in placement.where.items() if w == "ram")


@pytest.mark.parametrize("model", list(SIZES))
@pytest.mark.parametrize("host", list(HOSTS))
@pytest.mark.parametrize("card", CARDS)
def test_what_stays_in_ram_fits_the_host_with_room_to_read_a_shard(model, host, card):
    placed = plan(model, host, card)
    assert ram_held(placed, model) + SHARD + RAM_HEADROOM_BYTES / GIB <= HOSTS[host]
    assert set(placed.where) == set(SIZES[model])


@pytest.mark.parametrize("model", list(SIZES))
@pytest.mark.parametrize("card", CARDS)
def test_a_128_gb_host_keeps_every_weight_in_memory(model, card):
    assert plan(model, "128 GB", card).on_disk() == []


@pytest.mark.parametrize("card", CARDS)
def test_the_5b_never_needs_the_disk_on_a_64_gb_host(card):
    assert plan("ti2v-5b", "64 GB", card).on_disk() == []


@pytest.mark.parametrize("model", ["t2v-a14b", "i2v-a14b"])
def test_a_64_gb_host_with_a_24_gb_card_streams_the_idle_expert_from_disk(model):
    placed = plan(model, "64 GB", 24)
    assert placed.mode == "group"
    assert placed.where == {"text_encoder": "ram", "transformer": "ram", "transformer_2": "disk", "vae": "gpu"}
    assert "RAM is short" in placed.why["transformer_2"]
    assert "26.6 GiB streamed from disk (transformer_2)" in placed.reason


@pytest.mark.parametrize("model", ["t2v-a14b", "i2v-a14b"])
def test_an_80_gb_card_runs_one_expert_on_the_gpu_and_the_idle_one_waits_in_ram(model):
    placed = plan(model, "64 GB", 80)
    assert placed.mode == "none"
    assert placed.where["transformer"] == "gpu" and placed.where["transformer_2"] == "ram"


def test_model_offload_that_cannot_hold_everything_in_ram_becomes_group_offload_and_says_why():
    placed = plan("t2v-a14b", "64 GB", 48, requested="model")
    assert placed.mode == "group" and placed.where["transformer_2"] == "disk"
    assert "model offload keeps every component in RAM" in placed.reason


def test_when_ram_cannot_hold_the_idle_expert_a_big_card_holds_both():
    sizes = {n: int(g * GIB) for n, g in SIZES["t2v-a14b"].items()}
    placed = plan_placement("none", "cuda", sizes, 30 * GIB, True, vram_free=139 * GIB, largest_file=int(SHARD * GIB))
    assert placed.where["transformer"] == placed.where["transformer_2"] == "gpu"
    assert "the GPU holds both" in placed.why["transformer_2"]


def test_a_machine_without_a_gpu_and_too_little_ram_is_refused_with_the_figures():
    sizes = {n: int(g * GIB) for n, g in SIZES["t2v-a14b"].items()}
    with pytest.raises(ModelLoadError) as info:
        plan_placement("none", "cpu", sizes, 6 * GIB, True, largest_file=int(SHARD * GIB), model="t2v-a14b")
    message = str(info.value)
    assert "6.0 GiB available" in message and "needs about" in message and "ti2v-5b" in message


def test_weights_that_must_go_to_disk_need_the_disk_space_for_them():
    sizes = {n: int(g * GIB) for n, g in SIZES["t2v-a14b"].items()}
    with pytest.raises(ModelLoadError, match="disk"):
        plan_placement("group", "cuda", sizes, 58 * GIB, True, largest_file=int(SHARD * GIB), disk_free=10 * GIB)


def test_the_plan_is_described_per_component_for_the_header_and_the_settings():
    placed = plan("t2v-a14b", "64 GB", 24)
    assert placed.describe() == "text_encoder RAM · transformer RAM · transformer_2 disk · vae GPU"
    saved = placed.settings()
    assert saved["mode"] == "group" and saved["components"]["transformer_2"]["where"] == "disk"


# ----- through the engine, on the tiny models -------------------------------------------------------------------


def frames(engine, **kw) -> np.ndarray:
    events = list(engine.submit(GenerationRequest(prompt="a lantern", seed=4, steps=3, **kw)).events(timeout=120))
    assert isinstance(events[-1], Done), events[-1]
    return np.concatenate([e.frames for e in events if isinstance(e, Frames)]), events[-1]


def test_an_expert_that_does_not_fit_in_ram_streams_from_disk_and_makes_the_same_video_up_to_rounding(
    make_engine, tmp_path
):
    from engine.models.loading import component_dtypes, open_model

    reference, _ = frames(make_engine("tiny-t2v-moe"))
    model = open_model(builtin_specs()["tiny-t2v-moe"], lambda *a: None)
    sizes, largest = model.planned_sizes(component_dtypes(torch.device("cpu")))
    short = RAM_HEADROOM_BYTES + largest + sum(sizes.values()) - sizes["transformer_2"]  # one expert too little
    engine = make_engine("tiny-t2v-moe", host_ram=short)
    streamed, done = frames(engine)
    placement = done.settings["memory"]["placement"]["components"]
    assert placement["transformer_2"]["where"] == "disk" and placement["transformer"]["where"] == "ram"
    assert "transformer_2 disk" in engine.state().placement
    # a different path: the expert's weights come back from the offload file through group offloading's hooks
    assert_same_video_within_rounding(reference, streamed, "the expert streamed from disk")


def test_a_host_too_small_for_the_model_is_refused_before_loading(make_engine):
    engine = make_engine("tiny-ti2v", host_ram=RAM_HEADROOM_BYTES // 2)
    end = engine.load_model().wait(60)
    assert end.kind == "model" and "RAM" in end.message and "available" in end.message
    assert engine.pipeline is None and engine.state().state == "failed"
