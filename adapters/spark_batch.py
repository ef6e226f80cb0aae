"""``playbook batch --engine spark``: the batch job of adapters/batch.py on Apache Spark (PySpark).

Imported only for ``--engine spark`` (``pip install 'sales-playbook[spark]'``).  Spark reads the
files — JSON Lines as text lines, decoded by the same code as ``recommend`` decodes them; CSV with
its header; Parquet — and each partition's rows go through :func:`adapters.batch.evaluate_partition`
in the executors' Python workers, which compile the playbook once each.  The output is Parquet
partitioned by ``status``, written whole or not at all (a rerun replaces it).

Line numbers.  Spark does not number rows; each row is numbered within its file from
``monotonically_increasing_id`` (its partition and position there) and each file's row count per
partition, gathered first in one small aggregation (a split of a file is contiguous, and a file's
splits come in order).  A JSON Lines row is its physical line, as in ``recommend``; a CSV row is
numbered as the line it would start on if no cell spans lines and no line is blank (Spark's CSV
reader skips blank lines, and cells spanning lines need its multiLine mode, which reads a file whole).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark import SparkConf, StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from adapters.batch import COLUMNS, BatchCounts, BatchJob, evaluate_partition, prepare_output

__all__ = ["run_spark", "spark_session"]

_PARTITION_BITS = 33  # monotonically_increasing_id: the partition in the upper 31 bits, the row in the lower 33
_SCHEMA = StructType(
    [StructField(name, LongType() if name == "line" else StringType(), name != "line") for name in COLUMNS]
)


def spark_session(master: str | None = None) -> SparkSession:
    """A session whose Python workers run this interpreter and import this copy of the code."""
    here = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    builder = (
        SparkSession.builder.appName("playbook-batch")
        .config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", sys.executable))
        .config("spark.executorEnv.PYTHONPATH", python_path)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master is None and not SparkConf().contains("spark.master"):
        master = "local[*]"  # run outside spark-submit, which names the cluster's master
    if master is not None:
        builder = builder.master(master)
    return builder.getOrCreate()


def _read(spark: SparkSession, job: BatchJob, files: list[str]) -> DataFrame:
    if job.kind in ("jsonl", "json"):
        return spark.read.text(files)
    if job.kind == "csv":
        assert job.mapping is not None
        encoding = "UTF-8" if job.mapping.encoding == "auto" else job.mapping.encoding
        # every cell as text, as Python's csv module reads it
        return spark.read.options(header=True, encoding=encoding, inferSchema=False, multiLine=False).csv(files)
    return spark.read.parquet(*files)


def _first_rows(numbered: DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
    """(file, partition) -> (id of its first row there, rows of the file in earlier partitions)."""
    parts = (
        numbered.groupBy("_file", F.shiftright("_id", _PARTITION_BITS).alias("_part"))
        .agg(F.min("_id").alias("first"), F.count(F.lit(1)).alias("rows"))
        .collect()
    )
    firsts: dict[tuple[str, int], tuple[int, int]] = {}
    before: dict[str, int] = {}
    for part in sorted(parts, key=lambda p: (p["_file"], p["_part"])):
        firsts[part["_file"], part["_part"]] = (part["first"], before.get(part["_file"], 0))
        before[part["_file"]] = before.get(part["_file"], 0) + part["rows"]
    return firsts


def _path_of(uri: str) -> str:
    return unquote(uri.removeprefix("file://"))


def _partition(
    job: BatchJob, firsts: dict[tuple[str, int], tuple[int, int]], rows: Iterator[Row]
) -> Iterator[tuple[Any, ...]]:
    header_lines = 1 if job.kind == "csv" else 0

    def items() -> Iterator[tuple[str, int, Any]]:
        for row in rows:
            record = row.asDict(recursive=True)
            file, row_id = record.pop("_file"), record.pop("_id")
            first, before = firsts[file, row_id >> _PARTITION_BITS]
            line = before + row_id - first + 1 + header_lines
            if job.kind in ("jsonl", "json"):
                # with its line end, as a file read line by line gives it (a JSON error's column counts it)
                text = record["value"] + "\n"
                yield _path_of(file), line, text.removeprefix("\ufeff") if line == 1 else text
            else:
                yield _path_of(file), line, record

    return evaluate_partition(job, items())


def run_spark(spark: SparkSession, job: BatchJob, files: list[str], output: str, filing: Any = None) -> BatchCounts:
    """Evaluate every record of ``files`` on Spark; write Parquet under ``output/status=.../``.

    The caller has checked the input (:func:`adapters.batch.check_inputs`) before starting the session.
    ``filing`` (an adapters.batch_filing.Filing, with ``job.filing``): the results are kept (memory, else
    disk) while the output is written, then come to the driver in input order, file by file, to be filed:
    the audit log is one chain, written by one writer.
    """
    prepare_output(output)
    numbered = (
        _read(spark, job, files)
        .withColumn("_file", F.input_file_name())
        .withColumn("_id", F.monotonically_increasing_id())
    )
    firsts = _first_rows(numbered)
    results = spark.createDataFrame(
        numbered.rdd.mapPartitions(partial(_partition, job, firsts)),
        StructType([*_SCHEMA.fields, StructField("filed", StringType(), True)]) if job.filing else _SCHEMA,
    )
    if filing is not None:
        results = results.persist(StorageLevel.MEMORY_AND_DISK)
    results.drop("filed").write.mode("overwrite").partitionBy("status").parquet(output)
    if filing is not None:
        filed = results.where(F.col("filed").isNotNull()).select("source", "line", "filed")
        for row in filed.orderBy("source", "line").toLocalIterator():
            filing.add(row["source"], row["line"], row["filed"])
        filing.flush()
        results.unpersist()
    counts = BatchCounts()
    try:
        tallies = spark.read.parquet(output).groupBy("status", "code").count().collect()
    except AnalysisException:  # no record, no file: Spark cannot read back an output of no rows
        tallies = []
    for tally in tallies:
        counts.add(tally["status"], tally["code"], tally["count"])
    return counts
