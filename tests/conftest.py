from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import CompiledPlaybook, Evaluator, Playbook, compile_playbook, load_playbook

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AS_OF = dt.date(2026, 11, 27)


@pytest.fixture(scope="session")
def pipeline() -> Playbook:
    return load_playbook(FIXTURES / "pipeline.yaml")


@pytest.fixture(scope="session")
def compiled(pipeline: Playbook) -> Iterator[CompiledPlaybook]:
    with compile_playbook(pipeline) as compiled:
        yield compiled


@pytest.fixture
def evaluator(compiled: CompiledPlaybook) -> Evaluator:
    return Evaluator(compiled)
