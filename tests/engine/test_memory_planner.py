"""The auto planner on the shipped peaks table: the fastest mode whose peak plus margin fits, at real budgets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.catalog import builtin_specs
from engine.models.memory import GIB, load_peaks, peak_for, plan_memory, planning_size

CUDA = torch.device("cuda")
PEAKS = load_peaks()
# Published component sizes in bf16 (VAE float32), for the fallback rule
SIZES = {
    "ti2v-5b": {"text_encoder": 11 * GIB, "transformer": 10 * GIB, "vae": 3 * GIB},
    "t2v-a14b": {"text_encoder": 11 * GIB, "transformer": 27 * GIB, "transformer_2": 27 * GIB, "vae": GIB // 2},
}
SIZES["i2v-a14b"] = SIZES["t2v-a14b"]


def plan(model: str, free_gib: float, size=None, peaks=PEAKS, fp8=False):
    spec = builtin_specs()[model]
    size = size or (spec.width, spec.height, spec.frames)
    return plan_memory(
        "auto", CUDA, SIZES[model], int(free_gib * GIB), spec.moe, model=model, size=size, peaks=peaks, fp8=fp8
    )


def fits(model: str, mode: str, free_gib: float, size) -> bool:
    peak, _ = peak_for(PEAKS, model, mode, size)
    return peak * (1 + PEAKS["margin_fraction"]) + PEAKS["margin_gib"] <= free_gib


def test_the_shipped_table_says_its_entries_are_estimates_until_measured():
    assert "estimate" in PEAKS["about"]
    for model in ("ti2v-5b", "t2v-a14b", "i2v-a14b"):
        for mode in ("none", "model", "group", "sequential"):
            spec = builtin_specs()[model]
            assert peak_for(PEAKS, model, mode, (spec.width, spec.height, spec.frames)) is not None


@pytest.mark.parametrize(
    ("model", "budget", "mode"),
    [
        ("ti2v-5b", 24, "model"),
        ("ti2v-5b", 48, "none"),
        ("ti2v-5b", 80, "none"),
        ("t2v-a14b", 24, "group"),
        ("t2v-a14b", 48, "model"),
        ("t2v-a14b", 80, "none"),
        ("i2v-a14b", 24, "group"),
        ("i2v-a14b", 48, "model"),
        ("i2v-a14b", 80, "none"),
    ],
)
def test_auto_picks_the_fastest_mode_whose_peak_fits_the_budget(model, budget, mode):
    spec = builtin_specs()[model]
    size = (spec.width, spec.height, spec.frames)
    chosen = plan(model, budget)
    assert chosen.mode == mode
    assert fits(model, chosen.mode, budget, size)  # no OOM choice, by the table
    order = ["none", "model", "group", "sequential"]
    assert not any(fits(model, m, budget, size) for m in order[: order.index(mode)])  # nothing faster fits
    assert "GiB" in chosen.reason and "estimate" in chosen.reason and model in chosen.reason


def test_a14b_at_480p_has_its_own_smaller_peaks():
    assert plan("t2v-a14b", 48, size=(832, 480, 81)).mode == "none"
    assert plan("t2v-a14b", 48, size=(480, 832, 81)).mode == "none"  # same tokens, either orientation


def test_a_size_between_entries_uses_the_next_larger_entry():
    peak_480, _ = peak_for(PEAKS, "t2v-a14b", "none", (832, 480, 81))
    peak_720, _ = peak_for(PEAKS, "t2v-a14b", "none", (1280, 720, 81))
    assert peak_for(PEAKS, "t2v-a14b", "none", (960, 544, 81))[0] == peak_720
    assert peak_for(PEAKS, "t2v-a14b", "none", (640, 480, 81))[0] == peak_480


def test_a_size_beyond_the_table_scales_the_activations_not_the_weights():
    entry_peak, entry = peak_for(PEAKS, "ti2v-5b", "model", (1280, 704, 121))
    bigger, _ = peak_for(PEAKS, "ti2v-5b", "model", (1280, 704, 241))
    weights = entry["weights_gib"]
    assert bigger == pytest.approx(weights + (entry_peak - weights) * 241 / 121)


def test_without_an_entry_the_weight_size_rule_decides():
    spec = builtin_specs()["ti2v-5b"]
    chosen = plan_memory(
        "auto", CUDA, SIZES["ti2v-5b"], 80 * GIB, False, model="my/finetune", size=(1280, 704, 121), peaks=PEAKS
    )
    assert chosen.mode == "none" and "resident weights" in chosen.reason
    assert plan_memory("auto", CUDA, SIZES["ti2v-5b"], 80 * GIB, False, model=spec.id).mode == "none"  # no size


def test_when_nothing_fits_the_least_memory_mode_is_chosen():
    chosen = plan("t2v-a14b", 4)
    assert chosen.mode == "sequential" and "no mode's peak fits" in chosen.reason


def table(*entries):
    base = {"model": "m", "width": 64, "height": 64, "frames": 9, "fp8": False, "source": "measured"}
    return {"margin_gib": 0.0, "margin_fraction": 0.0, "entries": [{**base, **e} for e in entries]}


def test_measured_step_times_rank_the_modes_that_fit():
    peaks = table(
        {"mode": "none", "peak_gib": 10, "step_s": 2.0},
        {"mode": "model", "peak_gib": 8, "step_s": 1.5},
    )
    chosen = plan_memory("auto", CUDA, {}, 20 * GIB, False, model="m", size=(64, 64, 9), peaks=peaks)
    assert chosen.mode == "model" and "measured" in chosen.reason


def test_fp8_uses_fp8_entries_when_the_table_has_them():
    peaks = table({"mode": "none", "peak_gib": 30}, {"mode": "none", "peak_gib": 20, "fp8": True})
    args = ("auto", CUDA, {}, 25 * GIB, False)
    assert plan_memory(*args, model="m", size=(64, 64, 9), peaks=peaks, fp8=True).mode == "none"
    assert plan_memory(*args, model="m", size=(64, 64, 9), peaks=peaks).mode == "sequential"


def test_the_planning_size_is_the_default_or_a_larger_request():
    spec = builtin_specs()["t2v-a14b"]
    assert planning_size(spec) == (1280, 720, 81)
    assert planning_size(spec, SimpleNamespace(width=832, height=480, frames=81)) == (1280, 720, 81)
    assert planning_size(spec, SimpleNamespace(width=1280, height=720, frames=121)) == (1280, 720, 121)
