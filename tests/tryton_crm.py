"""A live Tryton CRM for the SQL adapter's tests: trytond with sale_opportunity on SQLite, in a temp dir.

:func:`build` creates the database with ``trytond-admin`` (config file pointing at the folder,
admin password from ``TRYTONPASSFILE``), then fills it through Tryton's own client library
(proteus) with the opportunities of :data:`OPPORTUNITIES`, moved through Tryton's workflow to
their states (a won deal is won by confirming its sale, as in Tryton).  Both steps run in
subprocesses: trytond keeps its configuration and pool in globals, and the test process stays
free of them.  Nothing is cached outside the folder given.

Run as a script (``python tryton_crm.py fill CONFIG DATABASE``) it is the filling step.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

__all__ = ["DATABASE", "OPPORTUNITIES", "PARTIES", "Opportunity", "TrytonCrm", "build"]

DATABASE = "crm"
PARTIES = ("Harbour Logistics", "Northwind Metals", "Blue Peak Clinics")
PRODUCT_PRICE = Decimal(100)


@dataclass(frozen=True)
class Opportunity:
    """One opportunity as the test setup makes it; ``description`` is unique and finds it again."""

    description: str
    state: str  # lead, opportunity, converted, won, lost, cancelled
    party: str | None
    amount: Decimal | None
    probability: float  # Tryton's conversion_probability: a fraction 0-1
    start_date: dt.date
    end_date: dt.date | None
    quantity: int = 0  # a line of the product (the won deal's amount comes from its sale)


_TABLE = (
    # description, state, party, amount, conversion probability, start date, end date, product quantity
    ("Website enquiry", "lead", None, "4000", 0.1, "2026-10-01", None, 0),
    ("Harbour: warehouse scanners", "lead", PARTIES[0], "12000", 0.25, "2026-10-15", "2027-03-31", 0),
    ("Northwind: plant retrofit", "opportunity", PARTIES[1], "45000.50", 0.65, "2026-09-01", "2026-12-04", 0),
    ("Harbour: fleet tracking", "opportunity", PARTIES[0], "8000", 0.45, "2026-09-20", "2027-01-08", 0),
    ("Blue Peak: clinic network", "opportunity", PARTIES[2], "30000", 0.85, "2026-08-10", "2027-02-26", 0),
    ("Northwind: service contract", "converted", PARTIES[1], "60000", 0.9, "2026-07-01", "2026-12-11", 0),
    ("Blue Peak: pilot site", "won", PARTIES[2], None, 1.0, "2026-06-01", "2026-11-02", 50),
    ("Harbour: yard cranes", "lost", PARTIES[0], "90000", 0.3, "2026-05-01", "2026-10-30", 0),
    ("Northwind: training days", "cancelled", PARTIES[1], "2500", 0.5, "2026-06-15", "2026-09-01", 0),
)
OPPORTUNITIES = tuple(
    Opportunity(
        description,
        state,
        party,
        None if amount is None else Decimal(amount),
        probability,
        dt.date.fromisoformat(start),
        None if end is None else dt.date.fromisoformat(end),
        quantity,
    )
    for description, state, party, amount, probability, start, end, quantity in _TABLE
)
"""The opportunities made, in creation order.  Tryton sets the end date of a closed one (won, lost,
cancelled) to the day it closed, and a won deal's amount to its sale's: 50 days at 100."""


@dataclass(frozen=True)
class TrytonCrm:
    """A built database: its SQLAlchemy URL, its file, and how long each step took (seconds)."""

    url: str
    path: Path
    admin_seconds: float
    fill_seconds: float


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def build(folder: Path) -> TrytonCrm:
    """Create and fill the Tryton database in ``folder``; everything it writes stays there."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "trytond.conf"
    config.write_text(f"[database]\nuri = sqlite://\npath = {folder}\n", encoding="utf-8")
    password = folder / "admin-password"
    password.write_text("admin-password-for-tests\n", encoding="utf-8")
    path = folder / f"{DATABASE}.sqlite"
    path.touch()  # trytond's SQLite backend opens an existing file only
    env = {
        **os.environ,
        "TRYTONPASSFILE": str(password),
        "TRYTOND_CONFIG": str(config),
        "HOME": str(folder),  # nothing of trytond's lands outside the folder
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("TRYTOND_DATABASE_URI", None)
    # the trytond-admin command, run by this interpreter wherever pip put the script
    admin = "import sys; from trytond.cli.admin import main; sys.argv[0] = 'trytond-admin'; sys.exit(main())"
    start = time.perf_counter()
    _run(
        [
            sys.executable,
            "-c",
            admin,
            "--config",
            str(config),
            "--database",
            DATABASE,
            "--all",
            "--update",
            "sale_opportunity",
            "--activate-dependencies",
            "--email",
            "admin@example.com",
        ],
        env,
        "trytond-admin",
    )
    admin_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _run([sys.executable, str(Path(__file__).resolve()), "fill", str(config), DATABASE], env, "filling Tryton")
    fill_seconds = time.perf_counter() - start
    return TrytonCrm(f"sqlite:///{path}", path, admin_seconds, fill_seconds)


def _fill(config_file: str, database: str) -> None:
    """Parties, a company, an employee, a product, and the opportunities, through proteus."""
    from proteus import Model, config  # type: ignore[import-not-found]
    from trytond.modules.account.tests.tools import create_chart, get_accounts  # type: ignore[import-not-found]
    from trytond.modules.company.tests.tools import create_company  # type: ignore[import-not-found]

    config.set_trytond(database=database, config_file=config_file)
    create_company()
    create_chart()
    accounts = get_accounts()

    Party = Model.get("party.party")
    Employee = Model.get("company.employee")
    parties = {}
    for name in PARTIES:
        party = Party(name=name)
        party.save()
        parties[name] = party
    rep = Party(name="Sam Seller")
    rep.save()
    employee = Employee(party=rep)
    employee.save()

    Category = Model.get("product.category")
    category = Category(name="Services", accounting=True, account_revenue=accounts["revenue"])
    category.save()
    (unit,) = Model.get("product.uom").find([("name", "=", "Unit")])
    template = Model.get("product.template")(
        name="Installation day",
        default_uom=unit,
        type="service",
        salable=True,
        list_price=PRODUCT_PRICE,
        account_category=category,
    )
    template.save()
    (product,) = template.products

    Opportunity_ = Model.get("sale.opportunity")
    for spec in OPPORTUNITIES:
        record = Opportunity_(description=spec.description, start_date=spec.start_date)
        if spec.party is not None:
            record.party = parties[spec.party]
        record.employee = employee
        record.amount = spec.amount
        record.conversion_probability = spec.probability
        record.end_date = spec.end_date
        if spec.quantity:
            line = record.lines.new()
            line.product = product
            line.quantity = spec.quantity
        record.save()
        if spec.state == "lead":
            continue
        if spec.state in ("lost", "cancelled"):
            record.click("lost" if spec.state == "lost" else "cancel")
            continue
        record.click("opportunity")
        if spec.state == "opportunity":
            continue
        (sale,) = record.click("convert")
        if spec.state == "won":
            sale.click("quote")
            sale.click("confirm")
        record.reload()
        assert record.state == spec.state, (spec.description, record.state)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "fill":
        sys.exit("usage: tryton_crm.py fill CONFIG DATABASE")
    _fill(sys.argv[2], sys.argv[3])
