"""The load test's own code path at tiny counts: it starts a studio, every job completes and the figures are sane.

No speed assertions: figures live in the benchmark's output and BENCHMARKS.md, never in tests.
"""

from __future__ import annotations

import json

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def load_test():
    return load_script("load_test")


@pytest.mark.parametrize(
    "url",
    ["http://example.com:7860/", "http://10.0.0.5:7860/", "http://127.0.0.1.evil.io/", "http://127.0.0.1@evil.io/"],
)
def test_a_studio_not_on_this_machine_is_refused(load_test, url):
    with pytest.raises(SystemExit, match="only drives a studio on this machine"):
        load_test.main(["--url", url])


@pytest.mark.parametrize("flags", [["--clients", "17"], ["--jobs", "0"], ["--clients", "16", "--jobs", "13"]])
def test_counts_beyond_its_bounds_are_refused(load_test, flags):
    with pytest.raises(SystemExit):
        load_test.main(flags)


def test_percentiles_interpolate_between_ranks(load_test):
    values = [4.0, 1.0, 3.0, 2.0]
    assert [load_test.percentile(values, q) for q in (0, 50, 100)] == [1.0, 2.5, 4.0]
    assert load_test.percentile([7.0], 99) == 7.0


def test_a_tiny_run_completes_every_job_and_reports_ordered_figures(load_test, tmp_path, capsys):
    out = tmp_path / "load.json"
    assert load_test.main(["--clients", "2", "--jobs", "2", "--steps", "2", "--json", str(out)]) == 0

    result = json.loads(out.read_text())
    summary, meta = result["summary"], result["meta"]
    assert summary["jobs"] == summary["done"] == 4
    assert meta["model"] == "tiny-ti2v" and "--clients 2" in meta["command"] and meta["date"]
    assert summary["throughput_jobs_per_min"] > 0
    for key in ("latency", "first_preview", "server_total"):
        figures = summary[key]
        assert figures["n"] == 4
        assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]
    assert summary["first_preview"]["max"] <= summary["latency"]["max"]
    assert len({job["seed"] for job in result["jobs"]}) == 4
    assert all(job["outcome"] == "done" and job["first_preview"] < job["latency"] for job in result["jobs"])
    printed = capsys.readouterr().out
    assert "| queue + complete (s) | 4 |" in printed and "jobs/min" in printed
