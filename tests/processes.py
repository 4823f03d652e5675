"""What a test needs to see of processes and running jobs: who a process started, whether it still runs, and a
stop asked at the first step."""

from __future__ import annotations

from pathlib import Path

from engine import Step


def descendants(pid: int) -> set[int]:
    """Every process started under `pid`, at any depth (read from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_at_first_step(job, timeout: float = 300) -> list[int]:
    """Ask the job to stop once its first step is done; the steps it made, once it ended."""
    for event in job.events(timeout=timeout):
        if isinstance(event, Step):
            job.cancel()
            break
    job.wait(120)
    return [e.index for e in job.history() if isinstance(e, Step)]
