"""Loaded YAML -> a checked :class:`~engine.model.Playbook`, or every problem at once.

Two passes: the JSON Schema in ``schemas/playbook.schema.json`` checks shape
(:mod:`.document`), then the builder resolves names (inputs, decisions, parameters,
actions, values), checks intervals and operator types, and orders the decision graph.
Each leaf check says what is wrong; the walker attaches where, from the YAML marks.
Nothing here runs the playbook.

The builder is one class per pass, each built on the one before: :mod:`.scope` (names
and scope, and the folding of problems under their root), :mod:`.conditions`,
:mod:`.tables`, :mod:`.rules` and :mod:`.graph` (the walk over a whole playbook and
its order); :mod:`.common` holds what they share.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import PlaybookError
from engine.load import Document, collector_paused, load_file, load_text
from engine.model import Playbook
from engine.validate.document import SCHEMAS_DIR, DocumentChecker, load_schema, playbook_schema
from engine.validate.graph import Builder

__all__ = [
    "SCHEMAS_DIR",
    "DocumentChecker",
    "build_playbook",
    "load_playbook",
    "load_playbook_text",
    "load_schema",
    "playbook_schema",
]


def load_playbook(path: str | Path) -> Playbook:
    """Load, check and build a playbook file; raise :class:`PlaybookError` with every problem."""
    return build_playbook(load_file(path))


def load_playbook_text(text: str, file: str = "<string>") -> Playbook:
    return build_playbook(load_text(text, file))


def build_playbook(doc: Document) -> Playbook:
    builder = Builder(doc)
    with collector_paused():
        playbook = builder.build()
    if builder.problems or playbook is None:
        raise PlaybookError(builder.fold())
    return playbook
