"""Fuzzing the adapters with a short budget in every run (tests/fuzz/adapter_targets.py says what each target
asserts); the corpus is replayed first, so an input that once failed stays a test.

A longer run: ``python -m tests.fuzz.adapter_targets all --seconds 600`` (docs/fuzzing.md).
``PLAYBOOK_FUZZ_EXAMPLES`` sets the examples per target here (default 100).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.adapter_targets import CHECKS, CORPUS, TARGETS, seed_records, seeds, strategy

EXAMPLES = int(os.environ.get("PLAYBOOK_FUZZ_EXAMPLES", "100"))
BUDGET = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@pytest.mark.parametrize("target", TARGETS)
def test_the_corpus_replays_without_a_failure(target: str) -> None:
    found = seed_records() if target == "mapping" else seeds(target)
    assert found, f"no seeds in {CORPUS / target}"
    for value in found:
        CHECKS[target](value)


@BUDGET
@given(strategy("csv_reader"))
def test_fuzz_csv_reader(data: bytes) -> None:
    CHECKS["csv_reader"](data)


@BUDGET
@given(strategy("jsonl_reader"))
def test_fuzz_jsonl_reader(data: bytes) -> None:
    CHECKS["jsonl_reader"](data)


@BUDGET
@given(strategy("json_records"))
def test_fuzz_json_records(data: bytes) -> None:
    CHECKS["json_records"](data)


@BUDGET
@given(strategy("mapping"))
def test_fuzz_mapping(record: dict[str, Any]) -> None:
    CHECKS["mapping"](record)
