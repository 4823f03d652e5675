"""Jobs per minute through a pool of workers on Ray (--workers), against one worker, in one run.

Eight tiny jobs are queued at once on: the studio's own in-process worker, a local Ray instance with one worker,
and one with two workers (each worker loads its model in a warm-up job first). Reports jobs per minute, the ratio
of two workers to one, and the overhead per job of going through Ray: the median, over sequential single jobs on an
idle pool, of (time from submit to Done) minus (the worker's own time for the job), against the same figure
in-process (goal: Ray adds under 1 s per job).

    python benchmarks/pool_throughput.py
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

import torch  # noqa: E402

from engine import Done, Engine, GenerationRequest  # noqa: E402


def request(seed: int, steps: int, size: int) -> GenerationRequest:
    return GenerationRequest(prompt="a lantern on a jetty", width=size, height=size, frames=9, steps=steps, seed=seed)


def finished(job) -> Done:
    end = job.wait(600)
    if not isinstance(end, Done):
        raise SystemExit(f"job did not finish: {end}")
    return end


def measure(name: str, engine: Engine, jobs: int, steps: int, size: int, workers: int) -> dict:
    for job in [engine.submit(request(100 + i, steps, size)) for i in range(workers)]:  # every worker loads
        finished(job)
    started = time.perf_counter()
    for job in [engine.submit(request(i, steps, size)) for i in range(jobs)]:  # each its own owner
        finished(job)
    elapsed = time.perf_counter() - started
    overheads = []
    for i in range(5):
        submitted = time.perf_counter()
        end = finished(engine.submit(request(200 + i, steps, size)))
        overheads.append(time.perf_counter() - submitted - end.timings["total"])
    engine.shutdown()
    return {
        "setup": name,
        "jobs": jobs,
        "seconds": elapsed,
        "jobs_per_minute": jobs / elapsed * 60,
        "overhead_s": statistics.median(overheads),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        setups = [("in-process, 1 worker", {}, 1), ("Ray, 1 worker", {"cluster": "local"}, 1)]
        setups.append(("Ray, 2 workers", {"cluster": "local", "workers": 2}, 2))
        for index, (name, options, workers) in enumerate(setups):
            engine = Engine(model="tiny-ti2v", outputs=Path(tmp) / f"out-{index}", **options)
            rows.append(measure(name, engine, args.jobs, args.steps, args.size, workers))
            print(f"{name}: {rows[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(
        f"# pool throughput, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d')}: {args.jobs} tiny-ti2v jobs at {args.size}x{args.size}x9, "
        f"{args.steps} steps"
    )
    print("| setup | seconds for the jobs | jobs per minute | overhead per job s (submit to Done minus the job) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['seconds']:.1f} | {r['jobs_per_minute']:.1f} | {r['overhead_s']:.3f} |")
    one, two = rows[1]["jobs_per_minute"], rows[2]["jobs_per_minute"]
    added = rows[1]["overhead_s"] - rows[0]["overhead_s"]
    print(f"two workers / one: {two / one:.2f}x; Ray adds {added:.3f} s per job")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print("PASS" if added < 1.0 else "FAIL: Ray adds 1 s or more per job")


if __name__ == "__main__":
    main()
