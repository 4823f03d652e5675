"""Drift over a long video: a clip extended 4 times, with and without colour matching, in one run.

A first clip is made (one pass), then extended 4 times in a row, each extension continuing the result of the one
before (as a creator making a 25-second video from a 5-second shot would), once with colour matching on and once
off, same seeds. Each window is decoded from the file that added it, as a viewer first sees it (the first clip, then
each extension's new frames); for each it reports the mean CIELAB brightness L and colour a, b, and their distance
from the first window's (delta E of the means, CIE76): drift is that distance growing window after window. Apart
from it: how far the first clip's own colours moved through the 4 re-encodes (each extension writes its source's
frames again).

    python benchmarks/drift.py                         # tiny-ti2v on this machine (random weights: noise)
    python benchmarks/drift.py --model ti2v-5b --steps 50 --size 1280x704   # a GPU with the real weights

With random weights the frames are noise, so the figures only show the mechanism (matching pulls every window
onto the reference); drift of a real model needs its real weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import Done, Engine, GenerationRequest  # noqa: E402
from engine.library.video_read import read_frames as frames_of  # noqa: E402
from engine.run.color import lab_stats  # noqa: E402


def read_frames(path: str) -> np.ndarray:
    return np.stack(list(frames_of(path)))


EXTENSIONS = 4


def made(engine: Engine, request: GenerationRequest) -> Done:
    end = engine.submit(request).wait()
    if not isinstance(end, Done):
        raise SystemExit(f"the job did not finish: {end}")
    return end


def windows_of(engine: Engine, args, color_match: bool) -> tuple[list[np.ndarray], float]:
    """Each window as a viewer first sees it (decoded from the file that added it: one encode each), and how far
    the first clip's colours moved by the time it is in the last file (H.264 once per extension: generation loss)."""
    width, height = (int(v) for v in args.size.split("x"))
    common = dict(width=width, height=height, steps=args.steps)
    done = made(engine, GenerationRequest(prompt=args.prompt, seed=args.seed, frames=args.frames, **common))
    first = read_frames(done.path)
    windows = [first]
    for i in range(EXTENSIONS):
        request = GenerationRequest(prompt=args.prompt, seed=args.seed + 1 + i, video=done.path,
                                    color_match=color_match, steps=args.steps)  # fmt: skip
        done = made(engine, request)
        windows.append(read_frames(done.path)[done.settings["source"]["frames"] :])
    again = read_frames(done.path)[: len(first)]
    loss = float(np.linalg.norm(np.array(lab_stats(again).mean) - np.array(lab_stats(first).mean)))
    return windows, loss


def report(windows: list[np.ndarray]) -> list[dict]:
    base = np.array(lab_stats(windows[0]).mean)
    rows = []
    for index, frames in enumerate(windows, start=1):
        mean = np.array(lab_stats(frames).mean)
        delta = mean - base
        rows.append({"window": index, "L": mean[0], "a": mean[1], "b": mean[2], "dL": delta[0], "da": delta[1],
                     "db": delta[2], "dE": float(np.linalg.norm(delta))})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-ti2v")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--frames", type=int, default=17, help="the first clip's frames (one pass)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk, waves below, slow camera push")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as outputs:
        engine = Engine(args.model, outputs=outputs)
        try:
            for color_match in (True, False):
                started = time.perf_counter()
                windows, loss = windows_of(engine, args, color_match)
                results["on" if color_match else "off"] = {
                    "rows": report(windows),
                    "generation_loss_dE": loss,
                    "seconds": time.perf_counter() - started,
                }
        finally:
            engine.shutdown()
    print(f"{args.model} {args.size}, {args.steps} steps, first clip {args.frames} frames, {EXTENSIONS} extensions")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    for name, result in results.items():
        print(f"\ncolour matching {name} ({result['seconds']:.1f} s); the first clip after {EXTENSIONS} re-encodes: "
              f"dE {result['generation_loss_dE']:.2f}")  # fmt: skip
        print("window      L      a      b     dL     da     db     dE")
        for r in result["rows"]:
            print(f"{r['window']:>6} {r['L']:6.2f} {r['a']:6.2f} {r['b']:6.2f} {r['dL']:6.2f} {r['da']:6.2f} "
                  f"{r['db']:6.2f} {r['dE']:6.2f}")  # fmt: skip
    last = {name: result["rows"][-1]["dE"] for name, result in results.items()}
    print(f"\nlast window's dE from the first: {last['on']:.2f} with colour matching, {last['off']:.2f} without")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
