"""One story told to an audit log, the same whatever the schema: tests/fixtures/v10-log*.sqlite.gz were written
with it by the code of schema version 10 (``python3 -m tests.story_log`` at 1baa9bc), and the test of the
migration (tests/test_store_compact.py) tells it again to a log made now, to compare the two.

Imports with a fixed clock: 41 cases, one empty and one that failed; the same cases a month later (so each
record's history changes); outcomes; a webhook deal changed twice and another one.
"""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
import sqlite3
import sys
from pathlib import Path

from adapters.ingest import Feed, Ingestor
from adapters.mapping import load_mapping
from adapters.webhook import RecordEvent
from engine import Evaluator, compile_playbook, load_playbook
from engine.audit import ImportItem, import_cases
from engine.errors import CaseError
from engine.store import Store
from tests.conftest import AS_OF, ROOT
from tests.test_store import sample_items

COURSE = ROOT / "playbooks" / "course.yaml"
KEY = b"5f0c1d8e2b7a4c6e9d3f1a0b8c7e6d5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d"  # the tests' key, no secret
NOW = 1795767944.0  # 2026-11-27
LATER = NOW + 30 * 86400


def _deal(record: str, event_id: str, at: int, **fields: str) -> RecordEvent:
    return RecordEvent("hubspot", "deal", record, event_id, "update", {"hs_object_id": record, **fields}, at, "7")


def tell(url: str, key: bytes | None = None) -> None:
    """Write the story to the log at ``url`` (made now), sealed with ``key`` if one is given."""
    hubspot = Feed("webhook:hubspot", load_mapping("hubspot_deal"), "deal")
    items = [
        *sample_items(),
        ImportItem("run:empty", ("empty", {})),
        ImportItem("run:bad", CaseError("line 99", "bad_json", "not JSON")),
    ]
    with compile_playbook(load_playbook(COURSE)) as course:
        for now, as_of, prefix in ((NOW, AS_OF, "run"), (LATER, AS_OF + dt.timedelta(days=30), "later")):
            store = Store(url, key=key, clock=lambda now=now: dt.datetime.fromtimestamp(now, dt.UTC))
            try:
                batch = [ImportItem(f"{prefix}:{str(item.key).split(':')[1]}", item.case) for item in items]
                list(import_cases(store, Evaluator(course), batch, as_of, source="test", batch=7))
                if prefix == "run":
                    store.record_outcome(1, "0", "accepted", "li.wei", "big deal")
                    store.record_outcome(1, "0", "done", "li.wei", "signed")
                    store.record_outcome(2, "0", "dismissed", "zhang", "not now")
                    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
                    try:
                        ingestor.ingest(hubspot, [_deal("42", "a", 1000, amount="250000")])
                        ingestor.ingest(hubspot, [_deal("42", "b", 2000, hs_deal_stage_probability="0.6")])
                        ingestor.ingest(hubspot, [_deal("43", "c", 3000, amount="1000")])
                    finally:
                        ingestor.close()
            finally:
                store.close()


def main(folder: Path) -> None:
    for name, key in (("v10-log.sqlite", None), ("v10-log-keyed.sqlite", KEY)):
        target = folder / name
        target.unlink(missing_ok=True)
        tell(f"sqlite:///{target}", key)
        with Store(f"sqlite:///{target}", key=key) as store:
            assert store.verify() == []
        conn = sqlite3.connect(target)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
        conn.close()
        with target.open("rb") as raw, gzip.open(f"{target}.gz", "wb", compresslevel=9) as packed:
            shutil.copyfileobj(raw, packed)
        target.unlink()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "fixtures")
