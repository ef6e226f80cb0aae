"""A short fuzzing budget over the playbook loader, validator and table checker, on each test run
(tests/fuzz/playbooks.py says what must hold); the corpus is replayed first, so a text that once
failed stays a test.  The long run: ``python -m tests.fuzz.run --target playbook --minutes 10``.

PLAYBOOK_FUZZ_EXAMPLES sets the examples (default 40; an eighth of them, at least 5, mutate the course playbook).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings

from tests.fuzz.playbooks import CORPUS, check, mutated, seeds, texts

EXAMPLES = int(os.environ.get("PLAYBOOK_FUZZ_EXAMPLES", "40"))


def test_every_seed_is_checked_without_a_crash() -> None:
    assert any(p.is_file() for p in CORPUS.iterdir()), f"{CORPUS} has no seed"
    outcomes = [check(text) for text in seeds()]
    assert "accepted" in outcomes and "refused" in outcomes


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts())
def test_hostile_playbooks_are_refused_or_checked_never_crash(text: str) -> None:
    assert check(text) in ("refused", "accepted")


@settings(max_examples=max(EXAMPLES // 8, 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated(course_only=True))
def test_mutations_of_the_course_playbook_never_crash_the_checker(text: str) -> None:
    assert check(text) in ("refused", "accepted")
