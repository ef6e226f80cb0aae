"""What every benchmark writes beside its text: the machine, the load average, and its figures as JSON.

Each bench takes ``--json PATH`` (:func:`add_json_option`) and ends with :func:`write_json`, which
writes its result dict there, or to ``bench/results/<name>.json`` without the flag.  bench/all.py
runs each bench with ``--json`` and gathers the files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="write the figures as JSON here (default: bench/results/NAME.json)"
    )


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded: the machine may be shared, say how much."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_json(result: dict[str, Any], name: str, path: Path | None) -> Path:
    """``result`` with the machine and the load average at the end, to ``path`` or bench/results/NAME.json."""
    target = path or RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {"bench": name, **result, "machine": machine(), "load_average_at_end": load_average()}
    target.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return target
