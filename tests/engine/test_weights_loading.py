"""The studio's weights reader: the same model diffusers loads, sizes known before loading, fp32 shards read as bf16
without ever holding the fp32 copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.models.tiny import ensure_tiny
from engine.models.weights import load_diffusers_model, stored_bytes, weight_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("component", ["transformer", "vae"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_reader_gives_exactly_what_diffusers_from_pretrained_gives(component, dtype):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    cls = {"transformer": WanTransformer3DModel, "vae": AutoencoderKLWan}[component]
    folder = ensure_tiny("tiny-ti2v")
    ours = load_diffusers_model(cls, folder / component, dtype).state_dict()
    theirs = cls.from_pretrained(str(folder), subfolder=component, torch_dtype=dtype).state_dict()
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key  # fp32-kept modules stay fp32 in both
        assert torch.equal(ours[key], theirs[key]), key


def test_sizes_come_from_the_file_headers_in_the_dtype_the_model_will_have():
    folder = ensure_tiny("tiny-t2v-moe") / "transformer"
    fp32, largest = stored_bytes(folder, torch.float32)
    bf16, _ = stored_bytes(folder, torch.bfloat16)
    assert largest == max(f.stat().st_size for f in weight_files(folder))
    assert bf16 * 2 == fp32 and fp32 <= largest  # a single file: the header's tensors are the file's bulk


def test_a_missing_weight_is_an_error_not_a_random_tensor(tmp_path):
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file, save_file

    source = ensure_tiny("tiny-ti2v") / "transformer"
    target = tmp_path / "transformer"
    target.mkdir()
    (target / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(str(weight_files(source)[0]))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(target / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        load_diffusers_model(WanTransformer3DModel, target, torch.float32)


def test_an_fp32_sharded_folder_loads_as_bf16_with_peak_rss_near_the_bf16_size():
    # ~0.2 GB bf16 in 12 fp32 shards, loaded in a fresh process (benchmarks/load_rss.py carries the full-width figure).
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load_rss.py"), "--heads", "12", "--layers", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    row = json.loads(out.stdout[out.stdout.index("{") :])
    assert row["shards"] >= 10 and "torch.bfloat16" in row["dtypes"]
    # Reading all fp32 first would peak at 2x or more; generous against allocator noise, well below that.
    assert row["peak_over_bf16"] <= 1.6, row
    assert row["final_over_bf16"] <= 1.3, row
