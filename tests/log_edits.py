"""Edits made behind the store's back, as a bug or an intruder would make them (schema version 11)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text


def edit_decisions(conn: Connection, seq: int, decisions: str) -> None:
    """The decisions evaluation ``seq`` shows changed to ``decisions``: a log text added, its row pointed at it."""
    digest = hashlib.sha256(decisions.encode()).hexdigest()
    conn.execute(text("INSERT INTO log_texts (hash, text) VALUES (:h, :t)"), {"h": digest, "t": decisions})
    conn.execute(
        text("UPDATE evaluation_rows SET decisions = (SELECT id FROM log_texts WHERE hash = :h) WHERE seq = :s"),
        {"h": digest, "s": seq},
    )
