"""Every source a playbook cites, and the course quotes that the course text does not hold.

A course entry's quote must be the course's own words: ``playbook check --course FILE`` compares each
with the course text, ignoring whitespace (a quote may join lines the text breaks, or break them
elsewhere).  The company's own references (``policy`` + ``text``) are not compared with anything.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from engine.errors import Location, Problem
from engine.model import Playbook, Source

__all__ = ["cited_sources", "closest_passage", "quotes_not_in_course"]

_SPACE = re.compile(r"\s+")


def cited_sources(playbook: Playbook) -> Iterator[Source]:
    """Each source written in the playbook once, in the order of its sections (a row that cites
    nothing of its own carries its table's source: that one is given once)."""
    seen: set[Location | None] = set()
    found: list[Source | None] = [p.source for p in playbook.parameters.values()]
    for decision in playbook.decisions.values():
        found += [decision.source, *(row.source for row in decision.rows)]
    found += [rule.source for rule in playbook.rules]
    found += [action.source for action in playbook.actions.values()]
    found += [schedule.source for schedule in playbook.schedules.values()]
    for source in found:
        if source is not None and source.ref and source.location not in seen:
            seen.add(source.location)
            yield source


def closest_passage(quote: str, course: str) -> str | None:
    """The stretch of ``course`` (whitespace removed) most like the quote, a character longer or shorter
    than it or as long, if it is alike enough to be what the editor meant (a character changed, added or
    dropped)."""
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(quote)
    best, best_ratio = None, 0.6
    wanted = set(quote)
    for size in (len(quote), len(quote) - 1, len(quote) + 1):
        for start in range(max(len(course) - size + 1, 0) if size > 0 else 0):
            if course[start] not in wanted:  # a quick filter: most stretches share little with the quote
                continue
            matcher.set_seq1(course[start : start + size])
            if matcher.real_quick_ratio() > best_ratio and matcher.quick_ratio() > best_ratio:
                ratio = matcher.ratio()
                if ratio > best_ratio:
                    best, best_ratio = course[start : start + size], ratio
    return best


def quotes_not_in_course(playbook: Playbook, course_text: str, course_file: str) -> list[Problem]:
    """A ``quote_not_in_course`` problem at each course quote the course text does not contain, with the
    closest passage of the course when one is close."""
    course = _SPACE.sub("", course_text)
    problems = []
    for source in cited_sources(playbook):
        quote = _SPACE.sub("", source.quote)
        if not source.guide or quote in course:
            continue
        message = f"the quote of {source.guide} is not in {course_file}: 「{source.quote}」"
        closest = closest_passage(quote, course)
        if closest is not None:
            message += f" (closest in the course: 「{closest}」)"
        problems.append(Problem(source.location or Location(playbook.file), "quote_not_in_course", message))
    return problems
