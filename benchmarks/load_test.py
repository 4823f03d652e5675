"""Load test: N clients each run M generations one after another against a studio on this machine, through the
public API (gradio_client, /text_to_video). Reports throughput and latency percentiles as a table, and as JSON with
--json.

    python benchmarks/load_test.py --clients 4 --jobs 3
    python benchmarks/load_test.py --url http://127.0.0.1:7860/ --clients 2 --jobs 2 --json $OUT/load.json

Without --url it starts `python app.py` itself on 127.0.0.1 (a free port, a fresh outputs folder, --preload, the
tiny offline model unless --model says otherwise) and stops it at the end. It only ever talks to this machine: a
--url whose host is not 127.0.0.1, localhost or ::1 is refused. Bounded: at most 16 clients, 50 jobs each and 200
jobs in all, and --time-limit seconds for the warm-up and again for the load (no new job starts after it; running
ones are stopped).

Per job, measured on the client: latency (submit until the video arrives: waiting in the queue plus the run) and
time to first preview (submit until the first preview image). From the server: the job's own run time
(timings.total in the settings it saved). Throughput counts finished jobs over the wall time from the first submit
to the last video. One warm-up job (not counted) runs first, so model loading and first-call costs are left out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
WAITING = re.compile(r"Waiting in the studio queue: (\d+) jobs? ahead")  # wan_ui/progress.py's wording
MAX_CLIENTS, MAX_JOBS_EACH, MAX_JOBS, MAX_TIME_LIMIT = 16, 50, 200, 3600
METRICS = {
    "latency": "queue + complete (s)",
    "first_preview": "time to first preview (s)",
    "server_total": "server run time per job (s)",
}


@dataclass
class JobRecord:
    client: int
    index: int
    seed: int
    outcome: str = "not run"  # "done", "failed", "stopped" (time limit), "unfinished" (no end seen) or "not run"
    message: str = ""
    submitted: float | None = None  # seconds since the load started
    first_preview: float | None = None  # seconds after its own submit
    latency: float | None = None  # seconds after its own submit
    server_total: float | None = None
    positions: list[int] = field(default_factory=list)  # queue places it was told
    settings: dict | None = field(default=None, repr=False)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default); needs at least one value."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def local_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
        raise SystemExit(
            f"Refusing {url!r}: the load test only drives a studio on this machine (127.0.0.1 or localhost)."
        )
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStudio:
    """`python app.py` on 127.0.0.1 in its own process, its log in a file; stopped on exit."""

    def __init__(self, model: str, queue_size: int, workdir: Path, timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = workdir / "app.log"
        command = [sys.executable, str(ROOT / "app.py"), "--model", model, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--outputs", str(workdir / "outputs")]
        command += ["--queue-size", str(queue_size), "--preload"]
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
        env.setdefault("HF_HUB_OFFLINE", "1")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the studio exited early:\n{self.log.read_text()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the studio did not start within {timeout} s") from None
                time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_job(client, record: JobRecord, params: dict) -> None:
    """Submit one generation and follow it to its end, filling in the record."""
    start = time.monotonic()
    record.submitted = start  # made relative to the start of the load at the end
    record.outcome = "unfinished"
    try:
        job = client.submit(
            prompt=f"load test client {record.client} job {record.index}",
            seed=record.seed,
            **params,
            api_name="/text_to_video",
        )
        for update in job:
            match = WAITING.search(update[3] or "")
            if match and (not record.positions or record.positions[-1] != int(match.group(1))):
                record.positions.append(int(match.group(1)))
            if update[0] and record.first_preview is None:
                record.first_preview = time.monotonic() - start
        _preview, video, _seed, status, settings = job.result()
    except Exception as exc:  # noqa: BLE001 - gradio_client raises its own types; a failure is a result here
        record.outcome, record.message = "failed", str(exc)[:300]
        return
    record.latency = time.monotonic() - start
    record.message = status or ""
    if video and settings:
        record.outcome = "done"
        record.server_total = settings["timings"]["total"]
        record.settings = settings
    else:
        record.outcome = "stopped"


def run_client(client, records: list[JobRecord], params: dict, go: threading.Barrier, expired) -> None:
    go.wait()
    for record in records:
        if expired.is_set():
            return
        run_job(client, record, params)


def summarize(records: list[JobRecord]) -> dict:
    done = [r for r in records if r.outcome == "done"]
    counts = {k: sum(r.outcome == k for r in records) for k in ("done", "failed", "stopped", "unfinished", "not run")}
    summary: dict = {"jobs": len(records), **counts}
    summary["most_jobs_ahead"] = max((max(r.positions) for r in records if r.positions), default=0)
    if not done:
        return summary
    first = min(r.submitted for r in records if r.submitted is not None)
    wall = max(r.submitted + r.latency for r in done) - first
    summary["wall_s"] = wall
    summary["throughput_jobs_per_min"] = len(done) / wall * 60 if wall > 0 else None
    for key in METRICS:
        values = [getattr(r, key) for r in done if getattr(r, key) is not None]
        if values:
            summary[key] = {
                "n": len(values),
                "mean": sum(values) / len(values),
                **{f"p{q}": percentile(values, q) for q in (50, 90, 99)},
                "max": max(values),
            }
    return summary


def table(summary: dict, meta: dict) -> str:
    lines = [
        f"Wan Studio load test: {meta['clients']} clients x {meta['jobs_each']} jobs, {meta['model']}, "
        f"{meta['size']}, on {meta['machine']}",
        f"jobs: {summary['done']} done, {summary['failed']} failed, {summary['stopped']} stopped at the time limit, "
        f"{summary['unfinished']} unfinished, {summary['not run']} not run",
    ]
    if "wall_s" in summary:
        lines.append(
            f"wall: {summary['wall_s']:.1f} s, throughput: {summary['throughput_jobs_per_min']:.1f} jobs/min, "
            f"most jobs ahead a client was told: {summary['most_jobs_ahead']}"
        )
        lines += ["", "| per job | n | p50 | p90 | p99 | max | mean |", "|---|---|---|---|---|---|---|"]
        for key, label in METRICS.items():
            if key in summary:
                m = summary[key]
                figures = " | ".join(f"{m[k]:.2f}" for k in ("p50", "p90", "p99", "max", "mean"))
                lines.append(f"| {label} | {m['n']} | {figures} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="a studio already running on this machine (default: start one)")
    p.add_argument("--model", default="tiny-ti2v", help="model for the studio it starts (default tiny-ti2v)")
    p.add_argument("--clients", type=int, default=4, help=f"clients at once (1..{MAX_CLIENTS})")
    p.add_argument("--jobs", type=int, default=3, help=f"jobs per client, one after another (1..{MAX_JOBS_EACH})")
    p.add_argument("--time-limit", type=float, default=600, help=f"wall seconds at most (..{MAX_TIME_LIMIT})")
    p.add_argument("--width", type=int, help="video width (default: the model's)")
    p.add_argument("--height", type=int, help="video height (default: the model's)")
    p.add_argument("--frames", type=int, help="frames (default: the model's)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--no-warmup", action="store_true", help="count the first job too (model load included)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        p.error(f"--clients must be 1..{MAX_CLIENTS}")
    if not 1 <= args.jobs <= MAX_JOBS_EACH:
        p.error(f"--jobs must be 1..{MAX_JOBS_EACH}")
    if args.clients * args.jobs > MAX_JOBS:
        p.error(f"at most {MAX_JOBS} jobs in all (asked for {args.clients * args.jobs})")
    if not 0 < args.time_limit <= MAX_TIME_LIMIT:
        p.error(f"--time-limit must be 0..{MAX_TIME_LIMIT} s")
    if args.url:
        local_url(args.url)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from gradio_client import Client
    from gradio_client import __version__ as client_version

    asked = {"width": args.width, "height": args.height, "num_frames": args.frames, "steps": args.steps}
    params = {k: v for k, v in asked.items() if v is not None}
    with tempfile.TemporaryDirectory(prefix="wan-load-") as workdir:
        studio = None if args.url else LocalStudio(args.model, max(16, args.clients), Path(workdir))
        url = args.url or studio.url
        try:
            if not args.no_warmup:
                warmup = Client(url, verbose=False).submit(
                    prompt="load test warm-up", seed=1, **params, api_name="/text_to_video"
                )
                warmup.result(timeout=args.time_limit)
            clients = [Client(url, verbose=False) for _ in range(args.clients)]
            records = [
                [JobRecord(c, i, seed=10_000 + c * 100 + i) for i in range(args.jobs)] for c in range(args.clients)
            ]
            go, expired = threading.Barrier(args.clients + 1), threading.Event()
            threads = [
                threading.Thread(target=run_client, args=(client, mine, params, go, expired), daemon=True)
                for client, mine in zip(clients, records, strict=True)
            ]
            for t in threads:
                t.start()
            go.wait()
            t0 = time.monotonic()
            deadline = t0 + args.time_limit
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            if any(t.is_alive() for t in threads):
                expired.set()
                for client in clients:
                    try:
                        client.predict(api_name="/stop")
                    except Exception as exc:  # noqa: BLE001 - report and go on stopping the others
                        print(f"could not stop a client's job: {exc}", file=sys.stderr)
                for t in threads:
                    t.join(timeout=60)
        finally:
            if studio is not None:
                studio.stop()
    flat = [r for mine in records for r in mine]
    for r in flat:
        if r.submitted is not None:
            r.submitted -= t0
    summary = summarize(flat)
    done = [r for r in flat if r.settings]
    request = done[0].settings["request"] if done else {}
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/load_test.py", *argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gradio_client": client_version,
        "studio": args.url or f"started: python app.py --model {args.model} --preload",
        "model": done[0].settings["model"] if done else args.model,
        "device": done[0].settings["device"] if done else None,
        "size": (
            f"{request['width']}x{request['height']}x{request['frames']} frames, {request['steps']} steps"
            if request
            else ", ".join(f"{k}={v}" for k, v in params.items()) or "the model's defaults"
        ),
        "clients": args.clients,
        "jobs_each": args.jobs,
        "time_limit_s": args.time_limit,
        "warmup": not args.no_warmup,
    }
    print(table(summary, meta))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        jobs = [{k: v for k, v in asdict(r).items() if k != "settings"} for r in flat]
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "jobs": jobs}, indent=2) + "\n")
    return 0 if summary["done"] == summary["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
