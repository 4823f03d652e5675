"""ZeroGPU support: the GPU time asked for follows the request, and without ZeroGPU nothing changes."""

from __future__ import annotations

import importlib.util

import pytest

from engine import GenerationRequest, builtin_specs
from wan_ui import zerogpu

SPEC = builtin_specs()["ti2v-5b"]


def test_the_default_5b_request_asks_for_its_measured_time_with_a_margin():
    seconds = zerogpu.gpu_seconds(GenerationRequest(prompt="x"), SPEC)
    assert 150 <= seconds <= 200  # 90 s target x 1.5 margin + 30 s for placing weights


def test_a_smaller_request_asks_for_less_time_but_never_below_the_floor():
    full = zerogpu.gpu_seconds(GenerationRequest(prompt="x"), SPEC)
    small = zerogpu.gpu_seconds(GenerationRequest(prompt="x", frames=81, steps=40), SPEC)
    tiny = zerogpu.gpu_seconds(GenerationRequest(prompt="x", width=256, height=256, frames=5, steps=1), SPEC)
    assert tiny == zerogpu.FLOOR_S < small < full


def test_a_huge_request_is_capped():
    huge = GenerationRequest(prompt="x", width=1920, height=1080, frames=241, steps=100)
    assert zerogpu.gpu_seconds(huge, builtin_specs()["t2v-a14b"]) == zerogpu.CEILING_S


def test_without_zero_gpu_hardware_generation_is_not_wrapped(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.active()


@pytest.mark.skipif(importlib.util.find_spec("spaces") is not None, reason="the spaces package is installed")
def test_the_zero_gpu_flag_without_the_spaces_package_changes_nothing(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert not zerogpu.active()
