"""Peak host RAM while the studio loads an fp32-sharded component as bf16 (the A14B Diffusers repos' layout).

The Hub's A14B experts are stored in float32 in 12 shards each; the studio runs them in bf16. Converting while
reading, shard by shard, keeps the peak near the bf16 size; reading everything first and casting after would need
the fp32 size (twice as much) plus the bf16 copy. Goal: peak RSS above the baseline at most 1.3 x the bf16 size.

    python benchmarks/load_rss.py                  # ~0.5 GB bf16 random Wan transformer, 12 fp32 shards
    python benchmarks/load_rss.py --layers 10 --json

A fresh process does each load, so nothing from building or saving the model is in its RSS. RSS is sampled every
2 ms (psutil) and checked against the kernel's own high-water mark (VmHWM). CPU only; no network.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GIB = 1024**3


def build(folder: Path, layers: int, shards: int, heads: int = 24) -> int:
    """Save a random Wan transformer (the 5B's width by default, fewer layers) in fp32 shards; returns its bf16
    bytes."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device("meta"):
        probe = WanTransformer3DModel(**config(layers, heads))
    numel = sum(p.numel() for p in probe.parameters())
    model = WanTransformer3DModel(**config(layers, heads))  # float32, as the Hub stores the A14B experts
    fp32 = numel * 4
    model.save_pretrained(
        folder / "transformer", safe_serialization=True, max_shard_size=int(fp32 / shards * 1.08)
    )  # tensors never split: about `shards` files
    return numel * 2


def config(layers: int, heads: int = 24) -> dict:
    """The TI2V-5B transformer's published config (gpu_bench.TRANSFORMER_5B) with fewer layers (and heads, the
    feed-forward width scaled with them)."""
    from gpu_bench import TRANSFORMER_5B  # this folder is on sys.path when a script here runs

    full = TRANSFORMER_5B["num_attention_heads"]
    return dict(
        TRANSFORMER_5B, num_layers=layers, num_attention_heads=heads, ffn_dim=TRANSFORMER_5B["ffn_dim"] * heads // full
    )


def _vm_hwm() -> int:
    """The kernel's peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's over from fork)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(folder: Path, loader: str) -> dict:
    """In this (fresh) process: load as bf16 (the studio's loader, or diffusers' from_pretrained to compare) and
    report RSS above the baseline."""
    import accelerate  # noqa: F401 - imported before the baseline: only the load itself is measured
    import psutil
    import safetensors.torch  # noqa: F401
    import torch
    from diffusers import WanTransformer3DModel

    from engine.models.loading import load_component

    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if loader == "studio":
        model = load_component(folder, "transformer", "diffusers", "WanTransformer3DModel", torch.bfloat16)
    else:
        model = WanTransformer3DModel.from_pretrained(
            str(folder), subfolder="transformer", torch_dtype=torch.bfloat16, disable_mmap=loader == "diffusers-nommap"
        )
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    high_water = _vm_hwm()
    return {
        "bf16_bytes": loaded,
        "dtypes": dtypes,
        "baseline_rss": baseline,
        "peak_rss_sampled": peak[0],
        "peak_rss_kernel": high_water,
        "final_rss": proc.memory_info().rss,
        "load_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (about 0.24 GB bf16 each)")
    parser.add_argument("--heads", type=int, default=24, help="attention heads of 128 (24: the 5B's width)")
    parser.add_argument("--shards", type=int, default=12, help="fp32 shards, as the Hub's A14B experts")
    parser.add_argument(
        "--loader",
        choices=("studio", "diffusers", "diffusers-nommap"),
        default="studio",
        help="the studio's loader, or diffusers' from_pretrained (memory-mapped or not) to compare",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.child), args.loader)))
        return 0
    with tempfile.TemporaryDirectory(prefix="wan-rss-") as tmp:
        folder = Path(tmp)
        bf16 = build(folder, args.layers, args.shards, args.heads)
        files = sorted((folder / "transformer").glob("*.safetensors"))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), "--loader", args.loader],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
    peak = max(row["peak_rss_sampled"], row["peak_rss_kernel"])
    row.update(
        loader=args.loader,
        shards=len(files),
        fp32_bytes=bf16 * 2,
        peak_over_bf16=(peak - row["baseline_rss"]) / row["bf16_bytes"],
        final_over_bf16=(row["final_rss"] - row["baseline_rss"]) / row["bf16_bytes"],
    )
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        print(
            f"{args.loader} loader: fp32 on disk {row['fp32_bytes'] / GIB:.2f} GiB in {row['shards']} shards -> bf16 "
            f"{row['bf16_bytes'] / GIB:.2f} GiB ({', '.join(row['dtypes'])}) in {row['load_s']:.1f} s\n"
            f"peak RSS above baseline: {(peak - row['baseline_rss']) / GIB:.2f} GiB = "
            f"{row['peak_over_bf16']:.2f} x bf16 (goal <= 1.3); after loading {row['final_over_bf16']:.2f} x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
