"""Field mappings: a company's CRM records -> the vocabulary's cases, written in YAML, no code.

A mapping names, for each vocabulary field (``opportunity.amount``), where its value
comes from in a source record and how to read it: type, locale, date formats,
value maps (stage name to win rate or milestones), numeric bands (probability to
a level), constants and fallbacks, and joins to other tables (``lookups``).

A record that cannot be mapped is *quarantined* with a code and a reason, never dropped:
:meth:`Mapping.to_case` is a boundary that turns any failure of one record, foreseen or not,
into a quarantined record, and each reader keeps one such boundary around its own parsing
(:func:`quarantine_failure`), so no record can stop a run.  A case whose text cannot be stored
(a NUL character, half of a surrogate pair) is quarantined too (:func:`unstorable`), and no
number that is not finite is ever let through.  Mapping files are checked like playbooks:
every problem at ``file:line:col`` with a stable code.  Presets live in ``adapters/presets/``.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Location, PlaybookError, Problem, did_you_mean

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
    "quarantine_failure",
    "shown",
    "unstorable",
]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
_EMPTY = frozenset(("", "null", "NULL", "None", "none", "N/A", "n/a", "#N/A"))
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

    def __post_init__(self) -> None:
        # whatever made it, a quarantined record can be printed and stored: its text is escaped if it must be
        if self.record_id is not None and not _storable(self.record_id):
            object.__setattr__(self, "record_id", shown(self.record_id))
        if not _storable(self.reason):
            object.__setattr__(self, "reason", _escaped(self.reason))

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
    optional: bool  # its match column may be absent from the input: then it finds nothing
    location: Location

    def normal(self, value: Any) -> str:
        text = "" if value is None else str(value).strip()
        return re.sub(r"[\W_]+", "", text).casefold() if self.compact else text


@dataclass(frozen=True)
class FieldRule:
    target: str  # obj.key
    obj: str
    key: str
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
    optional: bool  # its source columns may be absent from the input, not only empty
    location: Location


class _Missing:
    """No value.  One instance, also after pickling (a mapping is sent to Spark's workers)."""

    def __reduce__(self) -> str:
        return "_MISSING"


_MISSING = _Missing()


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
        return used | self._columns(
            [lookup.match for lookup in self.lookups.values()],
            [q[0] for q in self.quarantine],
            *(rule.sources for rule in self.fields),
        )

    def _columns(self, *groups: Iterable[str]) -> set[str]:
        """The main record's columns that sources name (a lookup's columns are its table's)."""
        columns = set()
        for group in groups:
            for source in group:
                # a template's own name is only known per record; the names it is made of are columns
                for name in _PLACEHOLDER.findall(source) if "{" in source else [source]:
                    if "." not in name or name.split(".", 1)[0] not in self.lookups:
                        columns.add(name)
        return columns

    def lookup_columns(self, name: str, *, needed: bool = False) -> set[str]:
        """The columns of lookup ``name``'s table this mapping reads (its key included); ``needed``: not
        counting those read only by ``optional`` fields."""
        prefix = f"{name}."
        sources = [q[0] for q in self.quarantine] + [lookup.match for lookup in self.lookups.values()]
        for rule in self.fields:
            if not (needed and rule.optional):
                sources += rule.sources
        names = {n for s in sources for n in (_PLACEHOLDER.findall(s) if "{" in s else [s])}
        return {n[len(prefix) :] for n in names if n.startswith(prefix)} | {self.lookups[name].key}

    def check_columns(self, present: Sequence[str], what: str) -> None:
        """Raise a located ``mapping_unknown_column`` for each column this mapping needs that ``what`` lacks.

        Every column it reads is needed, except those read only by ``optional`` fields and lookups.
        """
        optional = self._columns(
            [lookup.match for lookup in self.lookups.values() if lookup.optional],
            *(rule.sources for rule in self.fields if rule.optional),
        )
        needed = self._columns(
            [lookup.match for lookup in self.lookups.values() if not lookup.optional],
            [q[0] for q in self.quarantine],
            *(rule.sources for rule in self.fields if not rule.optional),
        )
        if len(self.record_id) == 1:
            needed |= set(self.record_id)
        missing = sorted(self.columns_used() - (optional - needed) - set(present))
        if missing:
            raise PlaybookError(
                Problem(
                    location_of_column(self, column),
                    "mapping_unknown_column",
                    f"column '{column}' is not in {what}{did_you_mean(column, [shown(p) for p in present])}",
                )
                for column in missing
            )

    # -- one record ---------------------------------------------------------------

    @functools.cached_property
    def _plain(self) -> frozenset[str]:
        """The fields' sources that are the record's own columns (no template, no lookup's column): most
        of them, read with ``record.get`` without :meth:`_get`'s checks (a webhook reads 44 per event)."""
        return frozenset(
            source
            for rule in self.fields
            for source in rule.sources
            if "{" not in source and not ("." in source and source.partition(".")[0] in self.lookups)
        )

    def _get(self, record: dict[str, Any], joined: dict[str, dict[str, Any] | None], source: str) -> Any:
        if "{" in source:
            return self._get(record, joined, self._fill(record, joined, source))
        head, _, rest = source.partition(".")
        if rest and head in self.lookups:
            other = joined.get(head)
            return None if other is None else other.get(rest)
        return record.get(source)

    def _fill(self, record: dict[str, Any], joined: dict[str, dict[str, Any] | None], template: str) -> str:
        """A source named by other values: ``hs_date_entered_{dealstage}``; empty if one of them is."""
        names = _PLACEHOLDER.findall(template)
        values = [self._get(record, joined, name) for name in names]
        if any(_empty(v) for v in values):
            return ""
        parts = _PLACEHOLDER.split(template)
        parts[1::2] = [str(v).strip() for v in values]
        return "".join(parts)

    def to_case(self, record: dict[str, Any], *, line: int | None = None) -> MappedCase | Quarantined:
        """The record's case, or the record quarantined with its line and reason; never an exception."""
        record_id: str | None = None
        try:
            record_id = self.id_of(record)
            return self._case(record, record_id, line)
        except _Reject as reject:
            return Quarantined(line, record_id, reject.code, reject.reason)
        except Exception as exc:  # noqa: BLE001 - the record's boundary: no record may stop a run
            return quarantine_failure(line, record_id, exc)

    def _case(self, record: dict[str, Any], record_id: str | None, line: int | None) -> MappedCase | Quarantined:
        joined = self._join(record)
        for source, op, values, code, reason, _ in self.quarantine:
            value = self._get(record, joined, source)
            text = "" if _empty(value) else str(value).strip()
            if (op == "one_of" and text in values) or (op == "missing" and not text):
                raise _Reject(code, reason.format(value=shown(text), field=source))
        case: dict[str, Any] = {}
        for rule in self.fields:
            value = self._field(rule, record, joined)
            if value is not _MISSING:
                case.setdefault(rule.obj, {})[rule.key] = value
        case_id = record_id or (f"line {line}" if line is not None else "record")
        case["id"] = case_id
        problem = unstorable(case)
        if problem is not None:
            raise _Reject("unstorable_text", problem)
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
            wanted = self._get(record, joined, lookup.match)  # a column, or an earlier lookup's column
            found = None if _empty(wanted) else table.get(lookup.normal(wanted))
            if found is None and lookup.required:
                if _empty(wanted):
                    raise _Reject("missing_field", f"'{lookup.match}' is empty; {name} cannot be found")
                keys = [str(r.get(lookup.key)) for r in table.values()]
                raise _Reject(
                    "lookup_not_found",
                    f"{lookup.match} '{shown(wanted)}' is not in {name}{did_you_mean(str(wanted), keys)}",
                )
            joined[name] = found
        return joined

    def _field(self, rule: FieldRule, record: dict[str, Any], joined: dict[str, dict[str, Any] | None]) -> Any:
        raw: Any = None
        used = ""
        plain = self._plain
        for source in rule.sources:
            candidate = record.get(source) if source in plain else self._get(record, joined, source)
            if candidate is not None and not (isinstance(candidate, str) and candidate.strip() in _EMPTY):
                raw, used = candidate, source  # not _empty(candidate), inlined: hot
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
            try:
                value = (dt.date.fromisoformat(value) + dt.timedelta(days=rule.add_days)).isoformat()
            except OverflowError:
                raise _Reject(
                    "bad_date", f"{used} '{shown(raw)}' plus {rule.add_days} days is not a date (after 9999-12-31)"
                ) from None
        if rule.scale is not None and isinstance(value, int | float):
            value = _finite(round(value * rule.scale, 6), raw, used)
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
                        f"{used} '{shown(key)}' has no mapping to {rule.target}{did_you_mean(key, rule.value_map)}",
                    )
            if isinstance(value, list):
                flat: list[Any] = []
                for m in mapped:
                    flat.extend(m if isinstance(m, list) else [m])
                value = list(dict.fromkeys(flat))
            else:
                value = mapped[0]
            if value is None:  # mapped to null: the value is known to say nothing, the field stays unknown
                return _MISSING
        if rule.bands:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _Reject("bad_number", f"{used} '{shown(raw)}' is not a number, so {rule.target} has no band")
            for below, band_value in rule.bands:
                if below is None or value < below:
                    return band_value
        return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in _EMPTY)


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_SHOWN = 60  # characters of a value quoted in a reason


def shown(value: Any) -> str:
    """A value as a reason quotes it: cut short, and with control characters and surrogates escaped."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOWN:
        text = f"{text[:_SHOWN]}… ({len(text)} characters)"
    return _escaped(text)


def _escaped(text: str) -> str:
    if text.isprintable() and (text.isascii() or _encodes(text)):
        return text
    return "".join(c if c.isprintable() and _encodes(c) else c.encode("unicode_escape").decode("ascii") for c in text)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable(value: Any) -> str | None:
    """Why a case cannot be stored, else None: text (a key or a value) holding a NUL or half a surrogate pair.

    PostgreSQL refuses NUL in text, and UTF-8 has no encoding for a lone surrogate (the audit
    log's hash and its JSON both need one), so such a case is quarantined before it is stored.
    """
    return None if _storable(value) else _why_unstorable(value, "")


def _text_storable(text: str) -> bool:
    return "\x00" not in text and (text.isascii() or _encodes(text))


def _storable(value: Any) -> bool:
    """The fast walk (every case takes it): strings are checked inline, containers recursed into."""
    if isinstance(value, str):
        return _text_storable(value)
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return True
    for key, inner in items:
        if type(key) is str and not _text_storable(key):
            return False
        if type(inner) is str:
            if "\x00" in inner or not (inner.isascii() or _encodes(inner)):  # _text_storable, inlined: hot
                return False
        elif isinstance(inner, dict | list | tuple) and not _storable(inner):
            return False
    return True


def _why_unstorable(value: Any, where: str) -> str | None:
    """The slow walk (only a case that cannot be stored takes it): where, and what."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where or 'a value'} holds a NUL character (\\u0000): text that cannot be stored"
        if not _encodes(value):
            code = next(ord(c) for c in value if 0xD800 <= ord(c) <= 0xDFFF)
            what = f"U+{code:04X}: half of a UTF-16 pair"
            if 0xDC80 <= code <= 0xDCFF:  # how Python keeps a byte that is not UTF-8
                what += f", or the byte 0x{code - 0xDC00:02X} that is not UTF-8"
            return f"{where or 'a value'} holds a lone surrogate ({what}): text that cannot be stored"
        return None
    if isinstance(value, dict):
        for key, inner in value.items():
            place = f"{where}.{key}" if where else str(key)
            problem = _why_unstorable(key, f"the name {shown(place)}") or _why_unstorable(inner, shown(place))
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            problem = _why_unstorable(inner, f"{where}[{i}]")
            if problem is not None:
                return problem
    return None


def quarantine_failure(line: int | None, record_id: str | None, exc: BaseException) -> Quarantined:
    """The boundary of one record: whatever went wrong with it becomes its quarantine, with its line and reason."""
    if isinstance(exc, MemoryError):  # the machine, not the record: nothing after it could be trusted
        raise exc
    if isinstance(exc, RecursionError):
        reason = "nested too deeply to read"
    else:
        reason = f"could not be read: {type(exc).__name__}: {shown(str(exc))}"
    return Quarantined(line, record_id, "bad_record", reason)


def _finite(number: Any, raw: Any, used: str) -> Any:
    """The number, if it is finite (a float can hold it): NaN, infinities and huge integers are refused."""
    try:
        if math.isfinite(number):
            return number
    except OverflowError:  # an integer too large for a float
        pass
    raise _Reject("bad_number", f"{used} '{shown(raw)}' is not a finite number")


def _parse_number(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, bool):
        raise _Reject("bad_number", f"{used} '{raw}' is not a number")
    if isinstance(raw, int | float):
        return _finite(raw, raw, used)
    text = str(raw)
    number = (_number_of if len(text) <= _CACHED else _number_of.__wrapped__)(text, rule.decimal)
    if number is None:
        raise _Reject("bad_number", f"{used} '{shown(raw)}' is not a number")
    return _finite(number, raw, used)


_CACHED = 40  # values this short are read once per distinct text: exports repeat dates, prices and stages


@functools.lru_cache(maxsize=8192)
def _number_of(text: str, decimal: str) -> int | float | None:
    """The number a text says (thousands separators, currency signs, a percent sign), else None."""
    text = text.strip().replace("\u00a0", "").replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%").lstrip("$¥€£")
    text = text.replace(".", "").replace(",", ".") if decimal == "," else text.replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return number  # refused by the caller, which names the field
    if percent:
        number /= 100
    return int(number) if number.is_integer() and "." not in text and not percent else number


def _parse_date(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, dt.datetime):
        return raw.date().isoformat()
    if isinstance(raw, dt.date):
        return raw.isoformat()
    text = str(raw).strip()
    formats = rule.formats or ("iso",)
    date = (_date_of if len(text) <= _CACHED else _date_of.__wrapped__)(text, formats)
    if date is None:
        raise _Reject("bad_date", f"{used} '{shown(raw)}' is not a date in {', '.join(formats)}")
    return date


@functools.lru_cache(maxsize=8192)
def _date_of(text: str, formats: tuple[str, ...]) -> str | None:
    """The ISO date a text says in the first of ``formats`` that reads it, else None."""
    for fmt in formats:
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
    return None


def _parse_boolean(raw: Any, rule: FieldRule, used: str) -> Any:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Reject("bad_boolean", f"{used} '{shown(raw)}' is not true or false")


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
    # the YAML reader and the schema checker come with a mapping file: reading JSON Lines cases needs neither
    from engine.load import load_file
    from engine.validate import DocumentChecker, load_schema

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
            optional=bool(spec.get("optional", False)),
            location=doc.at(("lookups", name), key=True),
        )
        for name, spec in (data.get("lookups") or {}).items()
    }
    declared: set[str] = set()
    for name, lookup in lookups.items():
        head, dot, _ = lookup.match.partition(".")
        if dot and head in lookups and head not in declared:
            checker.report(
                ("lookups", name, "match"),
                "mapping_lookup_order",
                f"lookup '{name}' matches on {lookup.match}: declare lookup '{head}' before it",
            )
        declared.add(name)
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
        if rule.get("optional") and rule.get("required"):
            checker.report(
                (*where, "optional"),
                "mapping_wrong_option",
                f"{target} is required and optional: a column that may be absent cannot be required",
            )
        if "formats" in rule and kind != "date":
            checker.report(
                (*where, "formats"), "mapping_wrong_option", f"'formats' reads dates; {target} is of type {kind}"
            )
        rules.append(
            FieldRule(
                target=str(target),
                obj=str(target).split(".", 1)[0],
                key=str(target).split(".", 1)[1],
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
                optional=bool(rule.get("optional", False)),
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
