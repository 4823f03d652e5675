"""Step time of one video split over N processes (--parallel N) against one process, in one run.

A random-weight TI2V pipeline whose transformer is wide enough that attention matters (8 heads x 64 by default;
the text encoder and VAE stay tiny) is saved once, then run through the Engine with parallel=1 and with each N
asked, same request and seed. Reports the median of the pipeline's own mean step time (the settings' `step_mean`)
over the timed runs, the speed-up against N=1, and the largest difference of the decoded frames (goal: within one
step of 255: the split sums attention in another order).

    python benchmarks/parallel_speed.py                      # CPU: N=1 and N=2 over gloo
    python benchmarks/parallel_speed.py --device cuda --degrees 2 4 8 --heads 40 --head-dim 128 --size 832x480

On a CPU the processes share the same cores (each gets cores/N threads), so expect little gain: the figure shows
the cost of the split. The gain is on GPUs, one per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import Done, Engine, Frames, GenerationRequest  # noqa: E402
from engine.models.tiny import build_wide_ti2v  # noqa: E402


def timed_runs(engine: Engine, request: GenerationRequest, runs: int) -> tuple[list[float], np.ndarray]:
    """Step means of `runs` jobs after one warm-up job (loading, first-call costs), and the last job's frames."""
    step_means, frames = [], None
    for index in range(runs + 1):
        job = engine.submit(request)
        chunks = [e.frames for e in job.events() if isinstance(e, Frames)]
        end = job.wait()
        if not isinstance(end, Done):
            raise SystemExit(f"job did not finish: {end}")
        if index:
            step_means.append(end.settings["timings"]["step_mean"])
        frames = np.concatenate(chunks)
    return step_means, frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--degrees", type=int, nargs="+", default=[2], help="the N to compare with N=1")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--size", default="512x512", help="WIDTHxHEIGHT")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    request = GenerationRequest(
        prompt="a lantern floats over a dark lake",
        width=width,
        height=height,
        frames=args.frames,
        steps=args.steps,
        seed=1234,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "wide-ti2v"
        build_wide_ti2v(args.heads, args.head_dim, args.layers).save_pretrained(folder)
        results = {}
        for degree in [1, *args.degrees]:
            engine = Engine(
                model=str(folder),
                outputs=Path(tmp) / f"out-{degree}",
                device=args.device,
                parallel=degree,
                preview_every=0,
            )
            if engine.state().state == "failed":  # more GPUs than the machine has, a degree the heads refuse
                print(f"N={degree}: {engine.state().message}", file=sys.stderr)
                engine.shutdown()
                continue
            started = time.perf_counter()
            results[degree] = timed_runs(engine, request, args.runs)
            engine.shutdown()
            print(f"N={degree}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        one_step = statistics.median(results[1][0])
        for degree, (steps, frames) in results.items():
            step = statistics.median(steps)
            diff = int(np.abs(frames.astype(np.int16) - results[1][1].astype(np.int16)).max())
            rows.append({"degree": degree, "step_median_s": step, "speedup": one_step / step, "max_frame_diff": diff})
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    )
    tokens = ((args.frames - 1) // 4 + 1) * (height // 32) * (width // 32)
    print(
        f"# parallel step time, {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}: transformer "
        f"{args.heads} heads x {args.head_dim}, {args.layers} layers; {width}x{height}x{args.frames} "
        f"({tokens} tokens), {args.steps} steps, median of {args.runs} runs"
    )
    print("| N | step median s | speed-up against N=1 | max frame diff (of 255) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['degree']} | {r['step_median_s']:.3f} | {r['speedup']:.2f} | {r['max_frame_diff']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    ok = all(r["max_frame_diff"] <= 1 for r in rows)
    print("PASS" if ok else "FAIL: frames differ by more than one step of 255")


if __name__ == "__main__":
    main()
