"""Field mappings: a company's CRM records -> the vocabulary's cases, written in YAML, no code.

A mapping names, for each vocabulary field (``opportunity.amount``), where its value
comes from in a source record and how to read it: type, locale, date formats,
value maps (stage name to win rate or milestones), numeric bands (probability to
a level), constants and fallbacks, and joins to other tables (``lookups``).
A record that cannot be mapped is *quarantined* with a code and a reason, never
dropped.  Mapping files are checked like playbooks: every problem at
``file:line:col`` with a stable code.  Presets live in ``adapters/presets/``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Location, PlaybookError, Problem, did_you_mean
from engine.load import load_file
from engine.validate import DocumentChecker, load_schema

__all__ = [
    "PRESETS_DIR",
    "FieldRule",
    "Lookup",
    "MappedCase",
    "Mapping",
    "Quarantined",
    "load_mapping",
    "location_of_column",
    "preset_names",
]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
_EMPTY = ("", "null", "NULL", "None", "none", "N/A", "n/a", "#N/A")
_TRUE = ("true", "yes", "y", "1", "t", "是")
_FALSE = ("false", "no", "n", "0", "f", "否")


@dataclass(frozen=True)
class MappedCase:
    case_id: str
    case: dict[str, Any]


@dataclass(frozen=True)
class Quarantined:
    """A source record set aside: where it was, what it was, why."""

    line: int | None
    record_id: str | None
    code: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "record_id": self.record_id, "code": self.code, "reason": self.reason}


class _Reject(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Lookup:
    """A join: records of another table, found by a key the main record holds."""

    name: str
    file: str | None
    table: str | None
    key: str
    match: str
    compact: bool
    required: bool
    location: Location

    def normal(self, value: Any) -> str:
        text = "" if value is None else str(value).strip()
        return re.sub(r"[\W_]+", "", text).casefold() if self.compact else text


@dataclass(frozen=True)
class FieldRule:
    target: str
    sources: tuple[str, ...]
    constant: Any
    type: str
    required: bool
    default: Any
    formats: tuple[str, ...]
    decimal: str
    scale: float | None
    add_days: int | None
    value_map: dict[str, Any] | None
    unmapped: Any  # what an unmapped value becomes; _MISSING: quarantine
    bands: tuple[tuple[float | None, Any], ...]
    split: str | None
    location: Location


_MISSING = object()


@dataclass
class Mapping:
    id: str
    file: str
    record_id: tuple[str, ...]  # the fields that name a record, first non-empty wins
    encoding: str
    lookups: dict[str, Lookup]
    quarantine: list[tuple[str, str, tuple[str, ...], str, str, Location]]  # field, op, values, code, reason, where
    fields: list[FieldRule]
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # lookup name -> normal key -> record

    # -- joins --------------------------------------------------------------------

    def attach(self, name: str, records: list[dict[str, Any]]) -> None:
        """Give a lookup its table (CSV files are read by the CSV adapter; SQL by the SQL adapter)."""
        lookup = self.lookups[name]
        table: dict[str, dict[str, Any]] = {}
        for record in records:
            table.setdefault(lookup.normal(record.get(lookup.key)), record)
        self.tables[name] = table

    def columns_used(self) -> set[str]:
        """The source columns of the main record this mapping reads (for checking a CSV header)."""
        used = set(self.record_id) if len(self.record_id) == 1 else set()  # alternatives may be absent
        used |= {lookup.match for lookup in self.lookups.values()}
        used |= {q[0] for q in self.quarantine if "." not in q[0] or q[0].split(".", 1)[0] not in self.lookups}
        for rule in self.fields:
            used |= {s for s in rule.sources if "." not in s or s.split(".", 1)[0] not in self.lookups}
        return used

    def check_columns(self, present: Sequence[str], what: str) -> None:
        """Raise a located ``mapping_unknown_column`` for each column this mapping reads that ``what`` lacks."""
        missing = sorted(self.columns_used() - set(present))
        if missing:
            raise PlaybookError(
                Problem(
                    location_of_column(self, column),
                    "mapping_unknown_column",
                    f"column '{column}' is not in {what}{did_you_mean(column, present)}",
                )
                for column in missing
            )

    # -- one record ---------------------------------------------------------------

    def _get(self, record: dict[str, Any], joined: dict[str, dict[str, Any] | None], source: str) -> Any:
        head, _, rest = source.partition(".")
        if rest and head in self.lookups:
            other = joined.get(head)
            return None if other is None else other.get(rest)
        return record.get(source)

    def to_case(self, record: dict[str, Any], *, line: int | None = None) -> MappedCase | Quarantined:
        record_id = self.id_of(record)
        try:
            joined = self._join(record)
            for source, op, values, code, reason, _ in self.quarantine:
                value = self._get(record, joined, source)
                text = "" if _empty(value) else str(value).strip()
                if (op == "one_of" and text in values) or (op == "missing" and not text):
                    raise _Reject(code, reason.format(value=text, field=source))
            case: dict[str, Any] = {}
            for rule in self.fields:
                value = self._field(rule, record, joined)
                if value is _MISSING:
                    continue
                obj, key = rule.target.split(".", 1)
                case.setdefault(obj, {})[key] = value
        except _Reject as reject:
            return Quarantined(line, record_id, reject.code, reject.reason)
        case_id = record_id or (f"line {line}" if line is not None else "record")
        case["id"] = case_id
        return MappedCase(case_id, case)

    def id_of(self, record: dict[str, Any]) -> str | None:
        """The record's id: the first of the ``record_id`` fields that has a value."""
        for name in self.record_id:
            value = record.get(name)
            if not _empty(value):
                return str(value).strip()
        return None

    def _join(self, record: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        joined: dict[str, dict[str, Any] | None] = {}
        for name, lookup in self.lookups.items():
            table = self.tables.get(name, {})
            wanted = record.get(lookup.match)
            found = None if _empty(wanted) else table.get(lookup.normal(wanted))
            if found is None and lookup.required:
                if _empty(wanted):
                    raise _Reject("missing_field", f"'{lookup.match}' is empty; {name} cannot be found")
                keys = [str(r.get(lookup.key)) for r in table.values()]
                raise _Reject(
                    "lookup_not_found",
                    f"{lookup.match} '{wanted}' is not in {name}{did_you_mean(str(wanted), keys)}",
                )
            joined[name] = found
        return joined

    def _field(self, rule: FieldRule, record: dict[str, Any], joined: dict[str, dict[str, Any] | None]) -> Any:
        raw: Any = None
        used = ""
        for source in rule.sources:
            candidate = self._get(record, joined, source)
            if not _empty(candidate):
                raw, used = candidate, source
                break
        if not used:
            if rule.constant is not _MISSING:
                return rule.constant
            if rule.default is not _MISSING:
                return rule.default
            if rule.required:
                raise _Reject("missing_field", f"{' or '.join(rule.sources)} is empty; {rule.target} is required")
            return _MISSING
        value = _PARSERS[rule.type](raw, rule, used)
        if rule.add_days is not None and isinstance(value, str):
            value = (dt.date.fromisoformat(value) + dt.timedelta(days=rule.add_days)).isoformat()
        if rule.scale is not None and isinstance(value, int | float):
            value = round(value * rule.scale, 6)
        if rule.value_map is not None:
            items = value if isinstance(value, list) else [value]
            mapped = []
            for item in items:
                key = str(item).strip()
                if key in rule.value_map:
                    mapped.append(rule.value_map[key])
                elif rule.unmapped is not _MISSING:
                    mapped.append(rule.unmapped)
                else:
                    raise _Reject(
                        "unknown_value",
                        f"{used} '{key}' has no mapping to {rule.target}{did_you_mean(key, rule.value_map)}",
                    )
            if isinstance(value, list):
                flat: list[Any] = []
                for m in mapped:
                    flat.extend(m if isinstance(m, list) else [m])
                value = list(dict.fromkeys(flat))
            else:
                value = mapped[0]
        if rule.bands:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _Reject("bad_number", f"{used} '{raw}' is not a number, so {rule.target} has no band")
            for below, band_value in rule.bands:
                if below is None or value < below:
                    return band_value
        return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in _EMPTY)


def _parse_number(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, bool):
        raise _Reject("bad_number", f"{used} '{raw}' is not a number")
    if isinstance(raw, int | float):
        return raw
    text = str(raw).strip().replace("\u00a0", "").replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%").lstrip("$¥€£")
    text = text.replace(".", "").replace(",", ".") if rule.decimal == "," else text.replace(",", "")
    try:
        number = float(text)
    except ValueError:
        raise _Reject("bad_number", f"{used} '{raw}' is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _Reject("bad_number", f"{used} '{raw}' is not a finite number")
    if percent:
        number /= 100
    return int(number) if number.is_integer() and "." not in text and not percent else number


def _parse_date(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, dt.datetime):
        return raw.date().isoformat()
    if isinstance(raw, dt.date):
        return raw.isoformat()
    text = str(raw).strip()
    for fmt in rule.formats or ("iso",):
        try:
            if fmt == "epoch_ms":
                return dt.datetime.fromtimestamp(int(float(text)) / 1000, dt.UTC).date().isoformat()
            if fmt == "epoch_s":
                return dt.datetime.fromtimestamp(int(float(text)), dt.UTC).date().isoformat()
            if fmt == "iso":
                return (
                    dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("+0000", "+00:00")).date().isoformat()
                )
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except (ValueError, OverflowError, OSError):
            continue
    raise _Reject("bad_date", f"{used} '{raw}' is not a date in {', '.join(rule.formats or ('iso',))}")


def _parse_boolean(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Reject("bad_boolean", f"{used} '{raw}' is not true or false")


def _parse_list(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, list):
        return [str(x).strip() for x in raw if not _empty(x)]
    return [part.strip() for part in str(raw).split(rule.split or ";") if part.strip()]


_PARSERS: dict[str, Callable[[Any, FieldRule, str], Any]] = {
    "string": lambda raw, rule, used: str(raw).strip(),
    "number": _parse_number,
    "date": _parse_date,
    "boolean": _parse_boolean,
    "list": _parse_list,
}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_mapping(name_or_path: str | Path) -> Mapping:
    """A preset by name, or a mapping file; raise PlaybookError with every located problem."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        preset = PRESETS_DIR / f"{name_or_path}.yaml"
        if not preset.exists():
            raise PlaybookError(
                [
                    Problem(
                        Location(str(name_or_path)),
                        "mapping_unknown_preset",
                        f"no preset '{name_or_path}'{did_you_mean(str(name_or_path), preset_names())}; "
                        f"presets: {', '.join(preset_names())}",
                    )
                ]
            )
        path = preset
    doc = load_file(path)
    checker = DocumentChecker(doc)
    checker.schema_pass(doc.data, load_schema("mapping.schema.json"))
    data = doc.data if isinstance(doc.data, dict) else {}
    if checker.problems:
        raise PlaybookError(checker.problems)
    meta = data["mapping"]
    lookups = {
        name: Lookup(
            name=name,
            file=spec.get("file"),
            table=spec.get("table"),
            key=spec["key"],
            match=spec["match"],
            compact=spec.get("normalize") == "compact",
            required=bool(spec.get("required", False)),
            location=doc.at(("lookups", name), key=True),
        )
        for name, spec in (data.get("lookups") or {}).items()
    }
    quarantine = []
    for i, spec in enumerate(data.get("quarantine") or []):
        where = ("quarantine", i)
        source = str(spec["field"])
        op = "missing" if spec.get("missing") else "one_of"
        values = tuple(str(v) for v in spec.get("one_of") or ())
        quarantine.append((source, op, values, str(spec["code"]), str(spec["reason"]), doc.at(where)))
    rules = []
    for target, spec in (data.get("fields") or {}).items():
        where = ("fields", target)
        rule = spec if isinstance(spec, dict) else {"from": spec}
        sources = [rule["from"]] if "from" in rule else list(rule.get("first_of") or [])
        bands = []
        for band in rule.get("bands") or []:
            bands.append((band.get("below"), band["value"]))
        if bands and bands[-1][0] is not None:
            checker.report(
                (*where, "bands"),
                "mapping_open_band",
                "the last band must have no 'below': it takes every larger value",
            )
        bounds = [b for b, _ in bands if b is not None]
        if bounds != sorted(bounds):
            checker.report(
                (*where, "bands"), "mapping_band_order", "bands must rise: each 'below' larger than the one before"
            )
        kind = str(rule.get("type", "string"))
        if "formats" in rule and kind != "date":
            checker.report(
                (*where, "formats"), "mapping_wrong_option", f"'formats' reads dates; {target} is of type {kind}"
            )
        rules.append(
            FieldRule(
                target=str(target),
                sources=tuple(str(s) for s in sources),
                constant=rule.get("value", _MISSING),
                type=kind,
                required=bool(rule.get("required", False)),
                default=rule.get("default", _MISSING),
                formats=tuple(rule.get("formats") or ()),
                decimal=str(rule.get("decimal", ".")),
                scale=rule.get("scale"),
                add_days=rule.get("add_days"),
                value_map={str(k): v for k, v in rule["map"].items()} if "map" in rule else None,
                unmapped=rule.get("unmapped", _MISSING),
                bands=tuple(bands),
                split=rule.get("split"),
                location=doc.at(where, key=True),
            )
        )
    if checker.problems:
        raise PlaybookError(checker.problems)
    return Mapping(
        id=str(meta["id"]),
        file=str(path),
        record_id=tuple(meta["record_id"])
        if isinstance(meta.get("record_id"), list)
        else tuple(filter(None, [meta.get("record_id")])),
        encoding=str(meta.get("encoding", "auto")),
        lookups=lookups,
        quarantine=quarantine,
        fields=rules,
    )


def location_of_column(mapping: Mapping, column: str) -> Location:
    """Where a mapping reads a column: its first field rule, lookup or quarantine rule that names it."""
    for rule in mapping.fields:
        if column in rule.sources:
            return rule.location
    for lookup in mapping.lookups.values():
        if lookup.match == column:
            return lookup.location
    for q in mapping.quarantine:
        if q[0] == column:
            return q[5]
    return Location(mapping.file, 1, 1)
