"""The GPU benchmark's own code path, at tiny scale on the CPU: it runs and writes well-formed results.

No timing assertions: speed goals live in the benchmark's output, never in tests.
"""

from __future__ import annotations

import json

import pytest

from .conftest import ROOT, load_script


@pytest.fixture(scope="module")
def gpu_bench():
    return load_script("gpu_bench")


def test_tiny_scale_runs_every_kind_of_variant_and_writes_json_markdown_and_peaks(gpu_bench, tmp_path):
    only = "5b/none,5b/baseline,5b/auto@24,5b/fp8,5b/fbc,5b/compile,a14b-720/none"
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro stays\n")
    args = ["--scale", "tiny", "--steps", "1", "--only", only, "--out", str(tmp_path / "out")]
    args += ["--write-peaks", str(tmp_path / "peaks.json"), "--benchmarks-md", str(md)]
    assert gpu_bench.main(args) == 0

    result = json.loads((tmp_path / "out" / "results.json").read_text())
    meta = result["meta"]
    for key in ("device", "torch", "diffusers", "transformers", "date", "command", "scale", "steps", "extrapolation"):
        assert meta[key]
    assert meta["scale"] == "tiny" and "--scale tiny" in meta["command"]
    rows = {r["name"]: r for r in result["variants"]}
    assert list(rows) == only.split(",")
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for name in ("5b/none", "5b/auto@24", "5b/fp8", "5b/compile", "a14b-720/none"):
        r = rows[name]
        for key in ("encode_s", "step_s", "step_median_s", "denoise_est_s", "decode_s", "e2e_est_s", "mode"):
            assert key in r, (name, key)
        assert r["official_steps"] in (40, 50)
        assert set(r["denoise_peak"]) == {"allocated_gib", "reserved_gib"}  # None on a CPU
        assert r["host_rss_peak_gib"] > 0
    assert rows["5b/auto@24"]["budget_gib"] == 24 and rows["5b/auto@24"]["plan_reason"]
    assert rows["5b/fp8"]["speed_state"]["fp8"] is True
    assert rows["5b/compile"]["speed_state"]["compiled"] is True and "compile_s" in rows["5b/compile"]
    fbc = rows["5b/fbc"]
    assert {"speedup", "psnr_db", "runs"} <= set(fbc) and set(fbc["runs"]) == {"cached", "uncached"}
    assert "e2e_est_s" in rows["5b/baseline"] and rows["5b/baseline"]["mode"].startswith("diffusers")
    assert {q["baseline"] for q in result["ratios"]} == {"5b/baseline"}

    text = md.read_text()
    assert "intro stays" in text and "<!-- gpu-bench:tiny -->" in text and "| 5b/none |" in text
    peaks = json.loads((tmp_path / "peaks.json").read_text())
    assert peaks["entries"] and all("peak_gib" in e and e["source"] for e in peaks["entries"])


def test_the_shipped_peaks_table_is_what_the_estimator_writes(gpu_bench, tmp_path):
    out = tmp_path / "peaks.json"
    assert gpu_bench.main(["--estimate-peaks", "--write-peaks", str(out)]) == 0
    shipped = json.loads((ROOT / "presets" / "memory_peaks.json").read_text())
    estimates = [e for e in shipped["entries"] if e["source"] == "estimate"]
    assert estimates == json.loads(out.read_text())["entries"]


def test_the_default_sweep_is_planned_to_fit_the_time_budget(gpu_bench):
    by_family: dict[str, float] = {}
    for name, seconds in gpu_bench.DEFAULT_SWEEP:
        family = "5b" if name.startswith("5b") else "a14b"
        by_family[family] = by_family.get(family, 0) + seconds
        gpu_bench.parse_variant(name)  # every name parses
    assert all(total <= 9.5 * 60 for total in by_family.values()), by_family
