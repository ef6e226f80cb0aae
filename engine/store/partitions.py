"""Partitions of the record chains (schema version 9): which partition a record's links are in, how links
are numbered, and the chain heads a write transaction holds.

A log is made with P partitions (meta ``partitions``, fixed for its life; 1 for a log made before
version 9).  The evaluations, records, quarantined and tasks chains each have one head per partition
(``evaluations``, ``evaluations/1``, ... ``evaluations/P-1``); a record's links are always in the
partition its source and id hash to, so its history stays in order within one partition, and two
transactions on records of different partitions lock different heads.  Links are numbered across the
partitions by interleaving (:func:`link_seq`): numbers are unique with no counter shared by the
partitions, and with one partition they are 1, 2, 3 as before.  The outcomes chain is not partitioned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from engine.store.batch import execute_many
from engine.store.schema import PARTITIONED, _meta_value, chain_head


def partition_head(chain: str, partition: int) -> str:
    """The chain head row of a chain's partition: the chain's own name for partition 0, then ``chain/N``."""
    return chain if partition == 0 else f"{chain}/{partition}"


def head_partition(name: str) -> tuple[str, int]:
    """(chain, partition) of a chain head row's name."""
    chain, _, number = name.partition("/")
    return chain, int(number) if number else 0


def partition_of(partitions: int, source: str, record: str) -> int:
    """The partition a record's links are in: a hash of its source and id, fixed for the log's life."""
    if partitions == 1:
        return 0
    digest = hashlib.blake2b(f"{source}\x1f{record}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def link_seq(partitions: int, partition: int, position: int) -> int:
    """The sequence number of a partition's ``position``-th link (from 1): partitions interleave, so
    numbers stay unique across the log with no counter shared between them (1, 2, 3... with one)."""
    return (position - 1) * partitions + partition + 1


def _partitions(conn: Connection, chain: str) -> int:
    """How many partitions ``chain`` has in this log."""
    return int(_meta_value(conn, "partitions") or 1) if chain in PARTITIONED else 1


class ChainHeads:
    """The chain heads one write transaction holds, each a partition's (links, hash of the last), locked first.

    Heads are locked in the order of their names, those named together in one statement: a writer
    that names every record it writes (:meth:`Writer.lock_records`) waits for the writers of those
    records' partitions only, and two such writers cannot deadlock.  A head asked for unnamed is
    locked then, with (on a partitioned log) every partition of every partitioned chain: a writer
    that does not say what it writes (an import, a tick) takes the whole log, as all did before.
    """

    def __init__(self, conn: Connection, partitions: int) -> None:
        self.conn = conn
        self.partitions = partitions
        self.held: dict[str, list[Any]] = {}  # name -> [links, hash of the last], moved in place by the writers
        self._saved: dict[str, tuple[int, str]] = {}  # name -> (links, hash) as the database has them

    def lock(self, names: Iterable[str]) -> int:
        """Lock these heads (those not held yet); how many were locked now."""
        wanted = sorted(set(names) - self.held.keys())
        if not wanted:
            return 0
        rows = self.conn.execute(_LOCK_HEADS, {"names": wanted})
        self._saved |= {row.chain: (int(row.seq), str(row.hash)) for row in rows}
        self.held |= {name: list(saved) for name, saved in self._saved.items() if name not in self.held}
        missing = [name for name in wanted if name not in self.held]
        if missing:
            raise LookupError(f"the chain head of '{missing[0]}' is missing")
        return len(wanted)

    def lock_partitions(self, partitions: Iterable[int]) -> int:
        """Lock every partitioned chain's head of these partitions."""
        return self.lock(partition_head(chain, p) for p in set(partitions) for chain in PARTITIONED)

    def get(self, chain: str, partition: int = 0) -> tuple[int, str]:
        """(links, last hash) of a chain's partition, locked."""
        links, last = self.head(chain, partition)
        return links, last

    def head(self, chain: str, partition: int = 0) -> list[Any]:
        """The partition's head as held, locked: ``[links, hash of the last]``, which a writer appending many
        links moves itself (the next link's number is ``link_seq(partitions, partition, links + 1)``)."""
        name = partition_head(chain, partition)
        if name not in self.held:
            self.lock([name] if self.partitions == 1 else self._every_partition())
        return self.held[name]

    def _every_partition(self) -> list[str]:
        return [partition_head(chain, p) for chain in PARTITIONED for p in range(self.partitions)]

    def next_seq(self, chain: str, partition: int) -> int:
        """The sequence number the partition's next link gets."""
        return link_seq(self.partitions, partition, self.get(chain, partition)[0] + 1)

    def advance(self, chain: str, partition: int, entry_hash: str) -> int:
        """One link added to the partition, sealed as ``entry_hash``; its sequence number."""
        seq = self.next_seq(chain, partition)
        head = self.held[partition_head(chain, partition)]
        head[0] += 1
        head[1] = entry_hash
        return seq

    def save(self, chains: Iterable[str]) -> None:
        """Write these chains' heads that moved."""
        chosen = set(chains)
        held, saved = self.held, self._saved
        moved = sorted(name for name in held if head_partition(name)[0] in chosen and tuple(held[name]) != saved[name])
        if moved:
            execute_many(
                self.conn,
                _SAVE_HEAD,
                [{"b_chain": name, "seq": held[name][0], "hash": held[name][1]} for name in moved],
            )
            saved |= {name: (held[name][0], held[name][1]) for name in moved}


# Built once: a statement built and compiled per call costs more than running it (a transaction runs
# these once or twice).
_LOCK_HEADS = (
    select(chain_head.c.chain, chain_head.c.seq, chain_head.c.hash)
    .where(chain_head.c.chain.in_(bindparam("names", expanding=True)))
    .order_by(chain_head.c.chain)
    .with_for_update()
)
_SAVE_HEAD = (
    update(chain_head)
    .where(chain_head.c.chain == bindparam("b_chain"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"))
)
