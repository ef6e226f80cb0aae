"""playbook review over a large audit log: how long the director's report takes, and its peak memory.

    python bench/review_scale.py [--deals 1000000] [--owners 500] [--regions 12] [--db URL] [--keep]

Filling the log.  Evaluating a million cases one by one would measure the engine, not the review, and
take far longer than the review itself; so ``--templates`` (default 2,000) varied synthetic deals are
evaluated with the course playbook, and each stored deal is one of those results filed under a new
record id with its own owner, team, region, market and amount (its decisions are its template's).
They go through the store's own writer (:meth:`engine.store.Writer.append`, hash chain and all), in
transactions of 10,000: the log is a real one, ``audit verify`` holds on it.  A tenth of the deals are
evaluated a second time (a later evaluation of the same record), so "latest per record" has work to do.

Then ``playbook review --group-by owner`` runs as a subprocess for each format asked (json, html: the
charts too), stdout to /dev/null; wall time and the child's peak RSS (``resource.getrusage`` of the
children, one child at a time) are printed, with the fill's own time and the database's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.store import Appended, Store, sqlite_path  # noqa: E402

AS_OF = dt.date(2026, 11, 30)
BATCH = 10_000


def _template_facts(rng: random.Random, n: int) -> dict[str, object]:
    close = AS_OF + dt.timedelta(days=rng.randint(-20, 120))
    return {
        "opportunity": {
            "id": f"t{n}",
            "amount": rng.choice([500, 1500, 4000, 9000, 15000, 40000]) + rng.randint(0, 400),
            "period_target": 30000,
            "close_date": close.isoformat(),
            "win_rate": rng.choice([0, 20, 40, 60]),
            "stage_entered_date": (AS_OF - dt.timedelta(days=rng.randint(0, 200))).isoformat(),
        },
        "account": {"id": f"a{n}", "attractiveness": rng.choice(["high", "low"])},
    }


def fill(url: str, deals: int, owners: int, regions: int, templates: int, seed: int) -> tuple[int, float]:
    """Store ``deals`` open deals (plus a tenth evaluated again); the evaluations written and the seconds."""
    rng = random.Random(seed)
    playbook = load_playbook(ROOT / "playbooks" / "course.yaml")
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)
        made = []
        for n in range(templates):
            facts = _template_facts(rng, n)
            made.append((facts, evaluator.evaluate_case(facts, AS_OF, f"t{n}")))
    start = time.perf_counter()
    written = 0
    order = list(range(deals)) + rng.sample(range(deals), deals // 10)  # a tenth of the records twice
    with Store(url) as store:
        for first in range(0, len(order), BATCH):
            items = []
            for k, n in enumerate(order[first : first + BATCH], first):
                facts, result = made[n % templates]
                owner = n % owners
                opportunity = dict(facts["opportunity"])  # type: ignore[call-overload]
                opportunity |= {
                    "id": f"d{n}",
                    "amount": opportunity["amount"] + n % 97,
                    "owner": f"Owner {owner:04d}",
                    "team": f"Manager {owner % 40:02d}",
                    "region": f"Region {owner % regions:02d}",
                    "market": f"Product {n % 7}",
                }
                outcome = dataclasses.replace(result, case=f"d{n}")
                items.append(Appended(outcome, {**facts, "opportunity": opportunity}, import_key=f"bench:{k}"))
            with store.write() as writer:
                writer.append(playbook, items, source="bench", as_of=AS_OF)
            written += len(items)
            if first // BATCH % 20 == 0:
                print(f"  filled {written:,} evaluations ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return written, time.perf_counter() - start


def run_review(url: str, fmt: str, output: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of one ``playbook review`` subprocess."""
    command = [
        sys.executable, str(ROOT / "cli.py"), "review", "--db", url, "--as-of", AS_OF.isoformat(),
        "--group-by", "owner", "--format", fmt, "--output", str(output),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak = after.ru_maxrss  # KiB on Linux; the largest child so far
    if peak <= before.ru_maxrss:
        print("  (peak RSS not above an earlier child's: the figure is an upper bound)", file=sys.stderr)
    return seconds, cpu, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--owners", type=int, default=500)
    parser.add_argument("--regions", type=int, default=12)
    parser.add_argument("--templates", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--db", help="An audit log URL to fill (default: a new SQLite file in a temporary folder).")
    parser.add_argument("--formats", default="json,html")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary SQLite file.")
    parser.add_argument("--reuse", action="store_true", help="With --db: review the log as it is, filling nothing.")
    add_json_option(parser)
    args = parser.parse_args()
    result: dict[str, object] = {"deals": args.deals, "owners": args.owners, "regions": args.regions, "reviews": []}
    folder = Path(tempfile.mkdtemp(prefix="review-scale-"))
    url = args.db or f"sqlite:///{folder / 'log.db'}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    file = sqlite_path(url)
    if not (args.reuse and args.db):
        written, fill_seconds = fill(url, args.deals, args.owners, args.regions, args.templates, args.seed)
        size = f", {file.stat().st_size / 2**30:.2f} GiB" if file is not None and file.exists() else ""
        print(f"filled: {args.deals:,} deals, {written:,} evaluations in {fill_seconds:.0f} s{size}")
        result["fill"] = {"evaluations": written, "seconds": round(fill_seconds, 2), "load_average": load_average()}
        if file is not None and file.exists():
            result["fill"]["db_gib"] = round(file.stat().st_size / 2**30, 3)  # type: ignore[index]
    for fmt in args.formats.split(","):
        seconds, cpu, peak = run_review(url, fmt, folder / f"review.{fmt}")
        load = os.getloadavg()[0]
        print(
            f"review --group-by owner --format {fmt}: {seconds:.1f} s wall, {cpu:.1f} s CPU, "
            f"peak RSS {peak:.0f} MiB (load {load:.1f})"
        )
        reviews = result["reviews"]
        assert isinstance(reviews, list)
        reviews.append(
            {"format": fmt, "wall_s": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(peak, 1)}
            | {"load_average": load_average()}
        )
    if not args.keep and args.db is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    write_json(result, "review_scale", args.json)


if __name__ == "__main__":
    main()
