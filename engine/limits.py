"""The engine's limits, shared by the stages that enforce them (load, validate, compile, store, adapters).

A module of its own, importing nothing, so that a stage reads a limit without importing the stage
that owns the rest of the work: ``compile`` does not import the validator, and the webhook parser
does not import the audit log (nor SQLAlchemy).
"""

from __future__ import annotations

__all__ = ["BATCH", "ID_LENGTH", "MAX_BYTES", "MAX_DEPTH", "MAX_DURABLE_RULES", "MAX_NODE_PROPERTIES", "QUESTION_CHUNK"]

# A playbook file: its size in bytes and how deep its YAML may nest (aliases are refused outright).
MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64

# durable-rules allows 255 properties per message; leave room for node, id and sid.
MAX_NODE_PROPERTIES = 240

# durable-rules allows 4096 rules per ruleset; every question adds one catch-all rule.
MAX_DURABLE_RULES = 4000

QUESTION_CHUNK = 16
"""Members asked about in one fact.  durable-rules fails with error 303 (its match stack, about 64
deep) when more of one fact's partial matches are pending at once: 66 interval rows on one number
did (``bench/scaling.py --shape band``).  A node with more members is asked in chunks of this size."""

BATCH = 2000  # cases per transaction of the audit log: a commit costs a disk sync

ID_LENGTH = 500
"""Characters of the ids evaluations and records are filed under (PostgreSQL enforces it); a webhook
event whose ids are longer is refused before it reaches the audit log."""
