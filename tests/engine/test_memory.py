"""The memory planner: which mode for which free VRAM, and why (a pure function, checked with real numbers)."""

from __future__ import annotations

import pytest
import torch

from engine.models.memory import GIB, plan_memory

CUDA = torch.device("cuda")
# Published component sizes in bf16 (VAE float32): 5B DiT ~10 GiB, umT5-XXL ~11 GiB, A14B experts ~27 GiB each.
TI2V_5B = {"text_encoder": 11 * GIB, "transformer": 10 * GIB, "vae": 1 * GIB}
A14B = {"text_encoder": 11 * GIB, "transformer": 27 * GIB, "transformer_2": 27 * GIB, "vae": GIB // 2}


def test_without_cuda_everything_runs_on_the_cpu():
    plan = plan_memory("auto", torch.device("cpu"), TI2V_5B, None, False)
    assert plan.mode == "none" and "CPU" in plan.reason


def test_an_offload_mode_asked_for_on_cpu_says_it_does_not_apply():
    plan = plan_memory("group", torch.device("cpu"), TI2V_5B, None, False)
    assert plan.mode == "none" and "'group' only applies to a GPU" in plan.reason


def test_a_mode_chosen_by_the_user_is_kept_on_a_gpu():
    assert plan_memory("sequential", CUDA, TI2V_5B, 80 * GIB, False).mode == "sequential"


@pytest.mark.parametrize(
    ("free_gib", "mode"),
    [(80, "none"), (48, "none"), (24, "model"), (12, "group"), (3, "sequential")],
)
def test_auto_for_ti2v_5b_picks_the_fastest_mode_that_fits(free_gib, mode):
    plan = plan_memory("auto", CUDA, TI2V_5B, free_gib * GIB, False)
    assert plan.mode == mode
    assert "GiB" in plan.reason


@pytest.mark.parametrize(("free_gib", "mode"), [(80, "none"), (48, "none"), (40, "model"), (24, "group")])
def test_auto_for_a14b_counts_only_one_resident_expert(free_gib, mode):
    assert plan_memory("auto", CUDA, A14B, free_gib * GIB, True).mode == mode


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="memory mode"):
        plan_memory("turbo", CUDA, TI2V_5B, 80 * GIB, False)
