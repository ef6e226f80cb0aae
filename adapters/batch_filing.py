"""``playbook batch --db``: the results of a batch filed in the audit log, as ``recommend --db`` files them.

Imported by the driver only (the executors need no database driver).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from adapters.batch import BatchJob, filed_of
from engine.limits import BATCH
from engine.model import Playbook
from engine.store import Appended, Store

__all__ = ["Filing"]


@dataclass
class Filing:
    """``batch --db``: the rows of a run filed in the audit log, in input order, a transaction per chunk.

    Each case is filed as ``recommend --db`` files it, under its file's run key and its line
    (``run:line``, adapters/import_run.py), so a rerun over the same input, mapping and ``as_of``
    (or a ``recommend --db`` over the same file, before or after) files nothing twice: what an
    earlier run stored is counted as such, not stored again.
    """

    store: Store
    playbook: Playbook
    job: BatchJob
    files: list[str]
    stored: int = 0
    earlier: int = 0
    first: int | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        from adapters.import_run import Source

        mapping = self.job.mapping
        self.source = "jsonl" if mapping is None else f"{self.job.kind}:{mapping.id}"
        self._runs: dict[str, str] = {}
        for file in self.files:
            run = Source(file, mapping).run_key(self.job.as_of)
            assert run is not None  # a file, not stdin
            self._runs[file] = self._runs[os.path.abspath(file)] = run  # as given, and as Spark names it
        self._pending: list[Appended] = []

    def add(self, source: str, line: int, filed: str) -> None:
        prepared = filed_of(filed)
        facts = json.loads(prepared.facts) if prepared.status == "ok" else {}  # for the tasks it recommends
        self._pending.append(Appended(prepared, facts, import_key=f"{self._runs[source]}:{line}"))
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        seqs = self.store.append(self.playbook, self._pending, source=self.source, as_of=self.job.as_of)
        self._pending = []
        new = [seq for seq in seqs if seq > 0]
        self.stored += len(new)
        self.earlier += len(seqs) - len(new)
        if new:
            self.first = self.first or new[0]
            self.last = new[-1]
