"""Quality and memory of each weight storage against the published precision, with the same seed.

For every storage type (int8 on load, GGUF Q8_0 / Q5_0 / Q4_0 files written from the same weights) this generates
one video through the studio's Engine and reports the PSNR of its decoded frames against the unquantized run, and
the transformer's bytes as stored. The reference is float32 on CPU and bf16 on a GPU.

The weights are random (nothing can be downloaded here), at a width where every Linear layer quantizes (rows of
256 or more values, like the real 3072/5120): the PSNR measures how far quantization moves the output through the
whole pipeline, not how a real video looks. Run it on a GPU with --width 3072 --layers 30 for real-size figures.

    python benchmarks/quantized_quality.py [--device cuda] [--width 256] [--layers 4] [--size 256] [--frames 9]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def wide_model(root: Path, width: int, layers: int) -> Path:
    """The tiny 5B-style pipeline with a wider, deeper random transformer (heads of 64, ffn 4x)."""
    from diffusers import WanTransformer3DModel

    from engine.models.tiny import ensure_tiny

    folder = root / "wide-ti2v"
    shutil.copytree(ensure_tiny("tiny-ti2v"), folder)
    config = WanTransformer3DModel.load_config(str(folder / "transformer"))
    config.update(num_attention_heads=width // 64, attention_head_dim=64, ffn_dim=4 * width, num_layers=layers)
    torch.manual_seed(0)
    model = WanTransformer3DModel.from_config(config)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.dim() == 2:  # a realistic scale for the Linear weights (default init is near zero for some)
                p.normal_(0, 1 / p.shape[1] ** 0.5)
    shutil.rmtree(folder / "transformer")
    model.save_pretrained(str(folder / "transformer"))
    return folder


def probe(transformer, device: str) -> torch.Tensor:
    """One transformer forward on fixed random inputs: the quantization error before it compounds over steps."""
    g = torch.Generator("cpu").manual_seed(1)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(1, 48, 3, 16, 16, generator=g).to(device, dtype)
    text = torch.randn(1, 32, 32, generator=g).to(device, dtype)
    with torch.no_grad():
        return transformer(x, torch.tensor([700.0], device=device), text, return_dict=False)[0].float().cpu()


def run(folder: Path, outputs: Path, device: str, size: int, frames: int, **weights):
    from engine import Done, Engine, GenerationRequest, WeightOptions

    engine = Engine(str(folder), outputs=outputs, device=device, weights=WeightOptions(**weights))
    try:
        request = GenerationRequest(prompt="a heron lands on a pond", width=size, height=size, frames=frames, steps=4)
        events = list(engine.submit(request).events(timeout=3600))
        done = events[-1]
        assert isinstance(done, Done), done
        video = np.concatenate([e.frames for e in events if e.__class__.__name__ == "Frames"])
        return video, done.settings["weights"]["transformer"], probe(engine.pipeline.transformer, device)
    finally:
        engine.shutdown()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=9)
    args = parser.parse_args()
    from tests.single_files import write_gguf

    root = Path(tempfile.mkdtemp(prefix="wan-quant-"))
    try:
        folder = wide_model(root, args.width, args.layers)
        from diffusers import WanTransformer3DModel

        transformer = WanTransformer3DModel.from_pretrained(str(folder), subfolder="transformer")
        files = {q: write_gguf(root / f"wide-{q}.gguf", transformer, q) for q in ("Q8_0", "Q5_0", "Q4_0")}
        del transformer
        runs = {"published": {}, "int8": {"quantize": "int8"}}
        runs.update({f"GGUF {q}": {"transformer": str(path)} for q, path in files.items()})
        reference = reference_out = None
        rows = []
        for label, weights in runs.items():
            video, stored, out = run(folder, root / "out", args.device, args.size, args.frames, **weights)
            if reference is None:
                reference, reference_out = video, out
            rows.append({"storage": label, "stored": stored["storage"], "bytes": stored["bytes"]})
            rows[-1]["forward_error"] = float((out - reference_out).norm() / reference_out.norm())
            rows[-1]["psnr_db"] = psnr(video, reference)
        base = rows[0]["bytes"]
        print("| storage | stored as | transformer | vs published | one forward, relative error | video PSNR (dB) |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            db = "identical" if row["psnr_db"] == float("inf") else f"{row['psnr_db']:.1f}"
            print(f"| {row['storage']} | {row['stored']} | {row['bytes'] / 2**20:.1f} MiB | "
                  f"{row['bytes'] / base:.2f} | {row['forward_error']:.2%} | {db} |")  # fmt: skip
        print(json.dumps({"args": vars(args), "rows": rows}, default=str))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
