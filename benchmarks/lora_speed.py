"""Step time of a Wan transformer with no LoRA, an unfused LoRA (PEFT adapter layers) and the same LoRA fused.

One denoising step is one transformer forward (twice with CFG; the ratio is the same). The studio attaches LoRAs
unfused (adapters.py): switching sets is then exact and cheap. Fusing folds the LoRA into the base weights; this
measures what that would save. Ratios are against the bare transformer in the same process.

    python benchmarks/lora_speed.py                          # 2 layers at the 5B's width, rank 64, CPU
    python benchmarks/lora_speed.py --layers 30 --device cuda --dtype bfloat16 --frames 21 --json

The LoRA is random, rank 64 on every attention and FFN projection (the shape of the Lightning LoRAs).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v")
LAYERS += ("attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2")


def lora_for(model: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for block in range(len(model.blocks)):
        for layer in LAYERS:
            linear = model.get_submodule(f"blocks.{block}.{layer}")
            key = f"transformer.blocks.{block}.{layer}"
            out[f"{key}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) * 0.01
            out[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * 0.01
    return out


def step_times(model, inputs: dict, repeats: int, device: torch.device) -> list[float]:
    times = []
    with torch.inference_mode():
        model(**inputs)  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from diffusers import WanPipeline, WanTransformer3DModel

    from benchmarks.gpu_bench import TRANSFORMER_5B

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--frames", type=int, default=3, help="latent frames")
    parser.add_argument("--side", type=int, default=32, help="latent height and width (the 5B: pixels / 16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    torch.manual_seed(0)
    model = WanTransformer3DModel(**dict(TRANSFORMER_5B, num_layers=args.layers)).to(device, dtype).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    inputs = {
        "hidden_states": torch.randn(1, 48, args.frames, args.side * 2, args.side * 2, device=device, dtype=dtype),
        "timestep": torch.tensor([500], device=device),
        "encoder_hidden_states": torch.randn(1, 512, 4096, device=device, dtype=dtype),
        "return_dict": False,
    }
    results = {"none": step_times(model, inputs, args.repeats, device)}
    pipe.load_lora_weights(lora_for(model, args.rank), adapter_name="bench")
    results["unfused"] = step_times(model, inputs, args.repeats, device)
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    results["fused"] = step_times(model, inputs, args.repeats, device)
    start = time.perf_counter()
    pipe.unfuse_lora(components=["transformer"])
    unfuse_s = time.perf_counter() - start

    base = statistics.median(results["none"])
    report = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU",
        "layers": args.layers,
        "rank": args.rank,
        "dtype": args.dtype,
        "tokens": args.frames * args.side * args.side,
        "step_s": {k: statistics.median(v) for k, v in results.items()},
        "ratio": {k: statistics.median(v) / base for k, v in results.items()},
        "unfuse_s": unfuse_s,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['device']}, {args.layers} layers at the 5B's width, rank {args.rank}, {report['tokens']} tokens")
    for key in ("none", "unfused", "fused"):
        print(f"  {key:8s} step {report['step_s'][key]:.3f} s  ratio {report['ratio'][key]:.3f}")
    print(f"  unfusing took {unfuse_s:.3f} s")


if __name__ == "__main__":
    main()
