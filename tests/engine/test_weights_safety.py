"""Weights load from safetensors only: a pickled weights file is never unpickled, and no remote code runs.

Each test plants a pickle that would create a marker file when unpickled, as a hostile download could.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from engine import Failed, PromptRefiner, RefinerConfig
from engine.models.tiny import ensure_tiny
from engine.refine.tiny import build_tiny_chat_model

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    """Unpickling this calls open(marker, "w"): the marker file exists afterwards."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant_pickle(folder: Path, name: str, marker: Path) -> None:
    for weights in folder.glob("*.safetensors*"):
        weights.unlink()
    torch.save({"weight": _Payload(marker)}, folder / name)


@pytest.mark.parametrize(
    ("component", "file_name"),
    [("transformer", "diffusion_pytorch_model.bin"), ("text_encoder", "pytorch_model.bin")],
)
def test_a_model_part_with_only_pickled_weights_is_refused_unread(make_engine, tmp_path, component, file_name):
    folder = tmp_path / "pickled"
    shutil.copytree(ensure_tiny("tiny-ti2v"), folder)
    marker = tmp_path / "unpickled"
    plant_pickle(folder / component, file_name, marker)
    end = make_engine(str(folder)).load_model().wait(60)
    assert isinstance(end, Failed) and f"'{component}' could not be loaded" in end.message
    assert not marker.exists()


def test_a_refiner_model_with_only_pickled_weights_falls_back_unread(tmp_path):
    folder = build_tiny_chat_model(tmp_path / "chat")
    marker = tmp_path / "unpickled"
    plant_pickle(folder, "pytorch_model.bin", marker)
    refiner = PromptRefiner(RefinerConfig(backend="local", local_model=str(folder)), device="cpu")
    result = refiner.refine("a fox in snow")
    assert result.fell_back and result.backend == "rules"
    assert not marker.exists()


def test_no_code_path_unpickles_or_trusts_remote_code():
    """A guard for future edits: the calls that would run code from a downloaded file appear nowhere."""
    risky = re.compile(r"trust_remote_code\s*=\s*True|torch\.load\(|pickle\.loads?\(|use_safetensors\s*=\s*False")
    sources = [*ROOT.glob("engine/**/*.py"), *ROOT.glob("wan_ui/**/*.py"), ROOT / "app.py"]
    found = [f"{p.relative_to(ROOT)}:{m.group(0)}" for p in sources for m in risky.finditer(p.read_text("utf-8"))]
    assert len(sources) > 20 and not found
