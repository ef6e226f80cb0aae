"""playbook batch: every record in, one Parquet row out, and the same results as ``recommend``, case by case.

The proof of equivalence runs both engines over the Maven export and Spark (local[2]) over a
generated 100,000-case set, and compares each record's output with the line ``recommend --no-store
--format json`` prints for it.  The Spark tests share one session; they skip when PySpark or Java is
missing here, unless PLAYBOOK_REQUIRE_SPARK is set (as .ci/run sets it), which makes that a failure.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cases import AS_OF, generate

pq = pytest.importorskip("pyarrow.parquet", reason="playbook batch writes Parquet: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent
MAVEN = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
MAVEN_AS_OF = "2017-06-30"
GENERATED = 100_000


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, cwd=ROOT, check=False)


def _recommended(input_path: Path, *options: str) -> list[bytes]:
    """recommend's JSON lines for this input, in input order."""
    done = _cli("recommend", "--no-store", "--format", "json", "--lang", "en", "--input", str(input_path), *options)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.stdout.splitlines()


def _recommended_digests(input_path: Path, *options: str) -> list[bytes]:
    """The digest of each of recommend's JSON lines, in input order (read as it prints them)."""
    args = ["recommend", "--no-store", "--format", "json", "--lang", "en", "--input", str(input_path), *options]
    with subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.PIPE, cwd=ROOT) as run:
        assert run.stdout is not None
        digests = [hashlib.sha256(line.rstrip(b"\n")).digest() for line in run.stdout]
    assert run.returncode in (0, 1)
    return digests


def _batch_rows(
    output: Path, columns: tuple[str, ...] = ("source", "line", "case", "code", "result")
) -> list[dict[str, Any]]:
    """Every output row with its status (from the folder it is in), by file and line."""
    rows = []
    for part in sorted(output.glob("status=*/*.parquet")):
        status = part.parent.name.removeprefix("status=")
        rows += [{**row, "status": status} for row in pq.read_table(part, columns=list(columns)).to_pylist()]
    return sorted(rows, key=lambda row: (row["source"], row["line"]))


def _needs_maven() -> None:
    if not MAVEN.is_dir():
        pytest.skip(f"the Maven export is not here ({MAVEN}): ../shared is absent")


def _maven_rows() -> int:
    with (MAVEN / "sales_pipeline.csv").open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _assert_same_as_recommend(output: Path) -> None:
    recommended = [
        json.loads(line)
        for line in _recommended(MAVEN / "sales_pipeline.csv", "--mapping", "maven", "--as-of", MAVEN_AS_OF)
    ]
    rows = _batch_rows(output)
    assert len(rows) == _maven_rows() == len(recommended)  # every row accounted for
    assert [json.loads(row["result"]) for row in rows] == recommended
    held = [row for row in rows if row["status"] == "quarantined"]
    assert held and all(row["code"] == "closed_deal" and row["line"] >= 2 for row in held)
    assert {row["status"] for row in rows} == {"result", "quarantined"}


# -- the local engine ----------------------------------------------------------------------------


def test_local_batch_over_maven_gives_recommends_results_for_every_row(tmp_path: Path) -> None:
    _needs_maven()
    output = tmp_path / "out"
    args = ["batch", "--input", str(MAVEN / "sales_pipeline.csv"), "--mapping", "maven", "--as-of", MAVEN_AS_OF]
    done = _cli(*args, "--output", str(output), "--lang", "en")
    assert done.returncode == 0, done.stderr.decode()
    assert "8800 rows: 2089 results, 0 errors, 6711 quarantined (closed_deal 6711)" in done.stderr.decode()
    _assert_same_as_recommend(output)
    # run again: the output is replaced, not doubled
    assert _cli(*args, "--output", str(output), "--lang", "en").returncode == 0
    assert len(_batch_rows(output)) == _maven_rows()


def test_batch_accounts_for_bad_lines_and_refuses_to_overwrite_other_files(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    good = [json.dumps(case) for _, case in generate(3)]
    cases.write_text("\n".join([good[0], "not json", "", "[1]", good[1], good[2]]) + "\n", encoding="utf-8")
    output = tmp_path / "out"
    done = _cli("batch", "--input", str(cases), "--as-of", AS_OF.isoformat(), "--output", str(output), "--lang", "en")
    assert done.returncode == 1  # case errors fail the run, as in recommend
    assert "5 rows: 3 results, 2 errors" in done.stderr.decode()
    rows = _batch_rows(output)
    assert [(row["line"], row["status"], row["code"]) for row in rows] == [
        (1, "result", None),
        (2, "error", "bad_json"),
        (4, "error", "bad_json"),
        (5, "result", None),
        (6, "result", None),
    ]
    assert [json.loads(row["result"]) for row in rows] == [
        json.loads(x) for x in _recommended(cases, "--as-of", AS_OF.isoformat())
    ]

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me", encoding="utf-8")
    done = _cli("batch", "--input", str(cases), "--output", str(precious))
    assert done.returncode == 2 and "not the output of an earlier batch run" in done.stderr.decode()
    assert (precious / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_a_bad_mapping_fails_before_any_record_is_read(tmp_path: Path) -> None:
    _needs_maven()
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(
        (ROOT / "adapters" / "presets" / "maven.yaml")
        .read_text(encoding="utf-8")
        .replace("field: deal_stage", "field: dael_stage"),
        encoding="utf-8",
    )
    output = tmp_path / "out"
    done = _cli(
        "batch", "--input", str(MAVEN / "sales_pipeline.csv"), "--mapping", str(mapping), "--output", str(output)
    )
    assert done.returncode != 0
    assert "dael_stage" in done.stderr.decode()
    assert not (output / "_SUCCESS").exists()


def test_spark_refuses_a_bad_mapping_or_playbook_located_before_any_cluster_starts(tmp_path: Path) -> None:
    """With Java unreachable, a check made after the session started would fail on Java instead."""
    _needs_maven()
    mapping = tmp_path / "bad.yaml"
    preset = (ROOT / "adapters" / "presets" / "maven.yaml").read_text(encoding="utf-8")
    mapping.write_text(preset.replace("field: deal_stage", "field: dael_stage"), encoding="utf-8")
    line = preset[: preset.index("field: deal_stage")].count("\n") + 1
    playbook = tmp_path / "bad-playbook.yaml"
    course = (ROOT / "playbooks" / "course.yaml").read_text(encoding="utf-8")
    playbook.write_text(course.replace("version:", "verison:", 1), encoding="utf-8")
    output = tmp_path / "out"
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "PATH": str(Path(sys.executable).parent)}
    base = ["batch", "--engine", "spark", "--input", str(MAVEN / "sales_pipeline.csv"), "--output", str(output)]
    for extra, where, code in (
        (["--mapping", str(mapping)], f"{mapping}:{line}:", "mapping_unknown_column"),
        (["--mapping", "maven", "--playbook", str(playbook)], f"{playbook}:", "unknown_key"),
    ):
        done = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *base, *extra], capture_output=True, cwd=ROOT, env=env, check=False
        )
        stderr = done.stderr.decode()
        assert done.returncode == 1, stderr
        assert where in stderr and f": {code}: " in stderr, stderr
        assert "java" not in stderr.lower(), stderr
        assert not output.exists()


# -- batch --db: the results filed in the audit log, as recommend --db files them ------------------


def _filed(db: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The log's evaluations (as list exports them, but when each was stored) and tasks."""
    listed = _cli("list", "--format", "json", "--db", db)
    tasks = _cli("tasks", "list", "--format", "json", "--db", db)
    assert listed.returncode == tasks.returncode == 0, listed.stderr.decode() + tasks.stderr.decode()
    evaluations = [json.loads(line) for line in listed.stdout.splitlines()]
    return [{k: v for k, v in e.items() if k != "created_at"} for e in evaluations], [
        json.loads(line) for line in tasks.stdout.splitlines()
    ]


def test_batch_db_files_what_recommend_db_files_and_a_rerun_files_nothing(db_url: str, tmp_path: Path) -> None:
    _needs_maven()
    args = ["batch", "--input", str(MAVEN / "sales_pipeline.csv"), "--mapping", "maven", "--as-of", MAVEN_AS_OF]
    done = _cli(*args, "--output", str(tmp_path / "out"), "--db", db_url)
    assert done.returncode == 0, done.stderr.decode()
    assert "audit log: 2089 filed (#1-#2089), 0 filed by an earlier run" in done.stderr.decode()
    again = _cli(*args, "--output", str(tmp_path / "out"), "--db", db_url)
    assert "audit log: nothing new filed; 2089 filed by an earlier run, not again" in again.stderr.decode()
    recommended = f"sqlite:///{tmp_path / 'recommended.db'}"
    done = _cli("recommend", *args[1:], "--format", "summary", "--db", recommended)
    assert done.returncode == 0, done.stderr.decode()
    filed, recommended_filed = _filed(db_url), _filed(recommended)
    assert len(filed[0]) == 2089 and filed[1] and filed == recommended_filed
    verified = _cli("audit", "verify", "--db", db_url)
    assert verified.returncode == 0 and "ok: the chains verify" in verified.stderr.decode()
    record = filed[0][0]["record_id"]
    assert f"#1  {MAVEN_AS_OF}" in _cli("history", record, "--db", db_url).stdout.decode()
    # recommend --db over the same file after the batch: stored by an earlier run, not twice
    done = _cli("recommend", *args[1:], "--format", "summary", "--db", db_url, "--lang", "en")
    assert "2089 already stored by an earlier run of this import" in done.stderr.decode()
    assert len(_filed(db_url)[0]) == 2089


# -- Apache Spark, local[2] ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One Spark session (local[2]) for the test run."""
    required = bool(os.environ.get("PLAYBOOK_REQUIRE_SPARK"))
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("PySpark is required (PLAYBOOK_REQUIRE_SPARK) but not installed: pip install -e '.[spark]'")
        pytest.skip("PySpark is not installed here: pip install -e '.[spark]' (.ci/run installs it)")
    if shutil.which("java") is None:
        if required:
            pytest.fail(
                "Java is required (PLAYBOOK_REQUIRE_SPARK) but not on PATH: apt-get install default-jre-headless"
            )
        pytest.skip("Java is not installed here (apt-get install default-jre-headless; .ci/run installs it)")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from adapters.spark_batch import spark_session

    session = spark_session("local[2]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _job(kind: str, mapping_name: str | None, as_of: str) -> Any:
    import datetime as dt

    from adapters.batch import BatchJob
    from adapters.csv_export import attach_lookups
    from adapters.mapping import load_mapping

    mapping = load_mapping(mapping_name) if mapping_name else None
    if mapping is not None:
        attach_lookups(mapping, MAVEN)
    playbook = ROOT / "playbooks" / "course.yaml"
    return BatchJob(
        playbook.read_text(encoding="utf-8"), str(playbook), kind, mapping, dt.date.fromisoformat(as_of), "en"
    )


def test_spark_batch_over_maven_gives_recommends_results_for_every_row(spark: Any, tmp_path: Path) -> None:
    _needs_maven()
    from adapters.spark_batch import run_spark

    output = tmp_path / "out"
    counts = run_spark(spark, _job("csv", "maven", MAVEN_AS_OF), [str(MAVEN / "sales_pipeline.csv")], str(output))
    assert (counts.rows, counts.results, counts.errors) == (8800, 2089, 0)
    _assert_same_as_recommend(output)


def test_spark_batch_over_100000_generated_cases_gives_recommends_results(spark: Any, tmp_path: Path) -> None:
    from adapters.spark_batch import run_spark

    cases = tmp_path / "cases.jsonl"
    with cases.open("w", encoding="utf-8") as handle:
        for number, (_, case) in enumerate(generate(GENERATED), 1):
            handle.write(json.dumps(case) + "\n")
            if number == GENERATED // 2:
                handle.write('{"opportunity": \n\n')  # a broken line and a blank one, half way
    output = tmp_path / "out"
    counts = run_spark(spark, _job("jsonl", None, AS_OF.isoformat()), [str(cases)], str(output))
    assert counts.rows == GENERATED + 1 and counts.errors >= 1
    # results of some 15 KB each: compare digests, in input order
    expected = _recommended_digests(cases, "--as-of", AS_OF.isoformat())
    got: list[tuple[int, bytes]] = []
    for part in output.glob("status=*/*.parquet"):
        for batch in pq.ParquetFile(part).iter_batches(columns=["line", "result"]):
            got += [(row["line"], hashlib.sha256(row["result"].encode()).digest()) for row in batch.to_pylist()]
    got.sort()
    assert [line for line, _ in got][GENERATED // 2 - 1 : GENERATED // 2 + 2] == [
        GENERATED // 2,
        GENERATED // 2 + 1,
        GENERATED // 2 + 3,
    ]
    assert len(got) == len(expected) == GENERATED + 1
    assert [digest for _, digest in got] == expected


def test_spark_numbers_lines_of_files_split_into_many_partitions_as_the_local_engine_does(
    spark: Any, tmp_path: Path
) -> None:
    from adapters.batch import input_files
    from adapters.spark_batch import run_spark

    folder = tmp_path / "in"
    folder.mkdir()
    cases = [json.dumps(case) for _, case in generate(120)]
    (folder / "a.jsonl").write_text("\ufeff" + "\n".join(cases[:70]) + "\n\nnot json\n", encoding="utf-8")
    (folder / "b.jsonl").write_text("\n".join(["", *cases[70:], "[2]"]) + "\n", encoding="utf-8")
    local = tmp_path / "local"
    done = _cli("batch", "--input", str(folder), "--as-of", AS_OF.isoformat(), "--output", str(local), "--lang", "en")
    assert "122 rows: 120 results, 2 errors" in done.stderr.decode()
    on_spark = tmp_path / "spark"
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")  # each file in several partitions
    try:
        files = input_files(str(folder))
        assert spark.read.text(files).rdd.getNumPartitions() > 2
        counts = run_spark(spark, _job("jsonl", None, AS_OF.isoformat()), files, str(on_spark))
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert (counts.rows, counts.results, counts.errors) == (122, 120, 2)
    columns = ("source", "line", "case", "code", "reason", "result")
    assert _batch_rows(on_spark, columns) == _batch_rows(local, columns)
    assert [row["line"] for row in _batch_rows(local) if row["source"].endswith("b.jsonl")][:2] == [2, 3]


# -- playbook replay --history: the audit log exported, replayed locally and on Spark ----------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An audit log of 400 generated cases stored as of two dates, a case error among them, exported as
    JSON Lines in two files; a changed playbook to replay."""
    folder = tmp_path_factory.mktemp("history")
    cases = folder / "cases.jsonl"
    lines = [json.dumps(case) for _, case in generate(400)]
    lines[7] = json.dumps({"opportunity": {"id": "opp-broken", "amount": "lots"}})
    cases.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = f"sqlite:///{folder / 'log.db'}"
    for as_of in ("2026-11-27", "2026-12-20"):
        done = _cli("recommend", "--input", str(cases), "--as-of", as_of, "--format", "summary", "--db", db)
        assert done.returncode in (0, 1), done.stderr.decode()
    exported = _cli("list", "--format", "json", "--db", db)
    assert exported.returncode == 0, exported.stderr.decode()
    evaluations = exported.stdout.splitlines(keepends=True)
    assert len(evaluations) == 800
    export = folder / "export"
    export.mkdir()
    (export / "a.jsonl").write_bytes(b"".join(evaluations[:500]))
    (export / "b.jsonl").write_bytes(b"".join(evaluations[500:]))
    course = ROOT / "playbooks" / "course.yaml"
    changed = folder / "changed.yaml"
    changed.write_text(
        course.read_text(encoding="utf-8").replace(
            "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
        ),
        encoding="utf-8",
    )
    return {"db": Path(db.removeprefix("sqlite:///")), "export": export, "course": course, "changed": changed}


def _replayed(history: dict[str, Path], *options: str) -> dict[str, Any]:
    base = ["replay", "--playbook", str(history["changed"]), "--baseline", str(history["course"])]
    done = _cli(*base, "--format", "json", "--lang", "en", *options)
    assert done.returncode == 0, done.stderr.decode()
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("options", [(), ("--all",), ("--since", "2026-12-01"), ("--examples", "2")])
def test_replay_of_an_exported_history_gives_the_audit_logs_report(history: dict[str, Path], options: Any) -> None:
    from_log = _replayed(history, "--db", f"sqlite:///{history['db']}", *options)
    assert from_log["changed"] > 2 and from_log["failed"]["records"] == 0
    assert from_log["not_replayed"] == {"failed when stored": 2 if "--all" in options else 1}
    assert _replayed(history, "--history", str(history["export"]), *options) == from_log


def test_replay_of_a_history_counts_the_lines_that_are_no_evaluation(history: dict[str, Path], tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(history["export"], export)
    with (export / "b.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"evaluation": 9000, "case": "x", "as_of": "2026-12-20"}\nnot json\n\n')
    from_log = _replayed(history, "--db", f"sqlite:///{history['db']}")
    got = _replayed(history, "--history", str(export))
    assert got["not_replayed"] == {"failed when stored": 1, "unreadable in the history": 2}
    assert {**got, "not_replayed": from_log["not_replayed"]} == from_log
    done = _cli("replay", "--playbook", str(history["changed"]), "--engine", "spark", "--history", str(export))
    assert done.returncode == 2 and "give --history and --baseline" in done.stderr.decode()


def test_spark_replay_of_a_history_gives_the_audit_logs_report(spark: Any, history: dict[str, Path]) -> None:
    from adapters.batch import input_files
    from adapters.history import ReplayJob
    from adapters.spark_history import replay_spark
    from engine import load_playbook
    from engine.replay import ReplayReport

    files = input_files(str(history["export"]))
    texts = [history[name].read_text(encoding="utf-8") for name in ("changed", "course")]
    job = ReplayJob(texts[0], str(history["changed"]), texts[1], str(history["course"]))
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")  # the history in several partitions
    try:
        for options, every, since in (
            ((), False, None),
            (("--all",), True, None),
            (("--since", "2026-12-01"), False, "2026-12-01"),
        ):
            report = ReplayReport(
                load_playbook(history["changed"]),
                load_playbook(history["course"]),
                {"file": str(history["course"])},
                every=every,
            )
            replay_spark(spark, job, files, report, since=since, every=every)
            assert report.to_json("en") == _replayed(history, "--db", f"sqlite:///{history['db']}", *options)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")


def test_spark_batch_db_files_what_the_local_engine_files_and_a_rerun_nothing(
    spark: Any, db_url: str, tmp_path: Path
) -> None:
    from adapters.batch_filing import Filing
    from adapters.spark_batch import run_spark
    from engine import load_playbook
    from engine.store import Store

    cases = tmp_path / "cases.jsonl"
    lines = [json.dumps(case) for _, case in generate(300)]
    cases.write_text("\n".join([*lines[:100], "not json", *lines[100:]]) + "\n", encoding="utf-8")
    local = f"sqlite:///{tmp_path / 'local.db'}"
    done = _cli(
        "batch", "--input", str(cases), "--as-of", AS_OF.isoformat(), "--output", str(tmp_path / "l"), "--db", local
    )
    assert "audit log: 301 filed (#1-#301)" in done.stderr.decode()
    job = dataclasses.replace(_job("jsonl", None, AS_OF.isoformat()), filing=True)
    playbook = load_playbook(ROOT / "playbooks" / "course.yaml")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")  # the file in several partitions
    try:
        for run in (1, 2):
            with Store(db_url) as store:
                filing = Filing(store, playbook, job, [str(cases)])
                run_spark(spark, job, [str(cases)], str(tmp_path / "spark"), filing)
            assert (filing.stored, filing.earlier) == ((301, 0) if run == 1 else (0, 301))
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert _filed(db_url) == _filed(local)
    assert _cli("audit", "verify", "--db", db_url).returncode == 0
