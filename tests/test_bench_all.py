"""bench/all.py: one run of the whole benchmark table writes every bench's figures, beside its anchor, as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAVEN = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
sys.path.insert(0, str(ROOT))

from bench.all import BENCHES  # noqa: E402


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_a_quick_run_reports_every_bench_with_its_anchor_and_the_load(tmp_path: Path) -> None:
    if not (MAVEN / "sales_pipeline.csv").exists():
        pytest.skip("../shared/crm-data (the Maven CRM sample set) is absent: three benches read it")
    out = tmp_path / "all.json"
    done = subprocess.run(
        [sys.executable, "bench/all.py", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu_model"]
    assert report["machine"]["memory_gib"] > 0
    assert len(report["machine_anchor"]["cases_per_s"]) == 2
    assert all(rate > 0 for rate in report["machine_anchor"]["cases_per_s"])
    assert report["failed"] == []

    zen_here = find_spec("zen") is not None
    assert set(report["benches"]) == {bench.name for bench in BENCHES}
    for bench in BENCHES:
        record = report["benches"][bench.name]
        if "skipped" in record:  # only what this machine lacks may be skipped, and it says so
            assert bench.needs == ["zen"] and not zen_here, (bench.name, record)
            assert "zen-engine" in record["skipped"]
            continue
        assert record["exit_code"] == 0, (bench.name, record.get("error"))
        assert len(record["load_average_before"]) == 3 and len(record["load_average_after"]) == 3
        figures = record["figures"]
        assert _numbers(figures), (bench.name, figures)
        assert record["result"]["machine"]["cores"] == report["machine"]["cores"]
        assert len(record["result"]["load_average_at_end"]) == 3
        if bench.anchor:  # its ratio to the anchor of the same run comes first
            first = next(iter(figures))
            assert first.startswith("ratio"), (bench.name, figures)
            assert all(ratio > 0 for ratio in _numbers(figures[first])), (bench.name, figures)
    if zen_here:
        by_rules = report["benches"]["zen_scaling"]["figures"]["ratio_ours_to_zen_by_rules"]
        assert set(by_rules) == {"10", "100"}
