"""``playbook replay --engine spark --history PATH``: adapters/history.py's replay on Apache Spark.

Spark reads the history as text lines and chooses the lines replayed from each line's evaluation
number, record and ``as_of`` (read with ``get_json_object``): each record's newest, unless every
one is replayed, then those as of ``since`` or later.  They are sorted by evaluation number, so each
partition holds a run of the sequence, in order; the executors' Python workers replay them
(:func:`adapters.history.replay_partition`, the playbooks compiled once per worker) and only the
changes and a tally per partition come back to the driver, partition by partition, in order.
"""

from __future__ import annotations

from functools import partial

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from adapters.history import UNREADABLE, ReplayJob, gather, replay_partition
from engine.replay import ReplayReport

__all__ = ["replay_spark"]


def replay_spark(
    spark: SparkSession,
    job: ReplayJob,
    files: list[str],
    report: ReplayReport,
    *,
    since: str | None = None,
    every: bool = False,
) -> ReplayReport:
    """Replay the history in ``files`` on Spark into ``report``."""
    value = F.col("value")
    lines = spark.read.text(files).where(F.trim(value) != "")
    keyed = lines.select(
        value,
        F.get_json_object(value, "$.evaluation").cast("long").alias("seq"),
        F.coalesce(F.get_json_object(value, "$.record_id"), F.get_json_object(value, "$.case")).alias("record"),
        F.get_json_object(value, "$.as_of").alias("as_of"),
    )
    readable = F.col("seq").isNotNull() & F.col("record").isNotNull() & F.col("as_of").isNotNull()
    unreadable = keyed.where(~readable).count()
    if unreadable:
        report.skipped[UNREADABLE] += unreadable
    chosen = keyed.where(readable)
    if not every:
        newest = F.max("seq").over(Window.partitionBy("record"))
        chosen = chosen.withColumn("newest", newest).where(F.col("seq") == F.col("newest"))
    if since is not None:
        chosen = chosen.where(F.col("as_of") >= since)
    texts = chosen.orderBy("seq").rdd.map(lambda row: row["value"])
    return gather(report, texts.mapPartitions(partial(replay_partition, job)).toLocalIterator())
