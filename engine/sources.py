"""Every source a playbook cites, and the course quotes that the course text does not hold.

A course entry's quote must be the course's own words: ``playbook check --course FILE`` compares each
with the course text, ignoring whitespace (a quote may join lines the text breaks, or break them
elsewhere).  The company's own references (``policy`` + ``text``) are not compared with anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from engine.errors import Location, Problem
from engine.model import Playbook, Source

__all__ = ["cited_sources", "quotes_not_in_course"]

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
    for source in found:
        if source is not None and source.ref and source.location not in seen:
            seen.add(source.location)
            yield source


def quotes_not_in_course(playbook: Playbook, course_text: str, course_file: str) -> list[Problem]:
    """A ``quote_not_in_course`` problem at each course quote the course text does not contain."""
    course = _SPACE.sub("", course_text)
    return [
        Problem(
            source.location or Location(playbook.file),
            "quote_not_in_course",
            f"the quote of {source.guide} is not in {course_file}: 「{source.quote}」",
        )
        for source in cited_sources(playbook)
        if source.guide and _SPACE.sub("", source.quote) not in course
    ]
