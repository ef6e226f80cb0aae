"""A short fuzzing budget over every webhook parser, on each test run; the long run is tests/fuzz/run.py.

PLAYBOOK_FUZZ_EXAMPLES sets the examples per parser (default 150).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.webhooks import TARGETS, Target, bodies, check

EXAMPLES = int(os.environ.get("PLAYBOOK_FUZZ_EXAMPLES", "150"))


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_every_corpus_body_is_refused_or_stored_cleanly(target: Target) -> None:
    seeds = target.seeds()
    assert seeds, f"tests/fuzz/corpus/{target.name} has no seed"
    outcomes = [check(target, body) for body in seeds]
    assert "accepted" in outcomes or all(name.startswith("crash-") for name in outcomes)


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_hostile_bodies_never_crash_a_parser(target: Target) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies(target))
    def property_holds(body: bytes) -> None:
        assert check(target, body) in ("refused", "accepted")

    property_holds()
