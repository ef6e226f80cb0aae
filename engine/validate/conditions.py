"""Conditions: each test's operator against its variable's type, operands, parameters and intervals."""

from __future__ import annotations

from typing import Any

from engine.conditions import COMPARE_OPS, COMPARISON_KEYS, OPERATORS, OPPOSITE_KEYS, durable_safe, numbers_of
from engine.errors import Location, did_you_mean
from engine.model import (
    AllOf,
    AnyOf,
    Atom,
    Compare,
    Condition,
    Interval,
    Not,
)
from engine.validate.common import (
    Path_,
    _fmt,
    _listing,
    _param_name,
    _subject,
    _type_name,
)
from engine.validate.scope import (
    Scope,
)


class Conditions(Scope):
    def operand(self, raw: Any, path: Path_) -> tuple[Any, str] | None:
        """Resolve a literal or ``{param: name}``; return (value, how it reads)."""
        if isinstance(raw, dict) and "param" in raw:
            name = str(raw["param"])
            param = self.parameters.get(name)
            if param is None:
                self.report(
                    (*path, "param"),
                    "unknown_parameter",
                    f"unknown parameter '{name}'{did_you_mean(name, self.parameters)}",
                    about=("parameter", name),
                )
                return None
            self.param_operands[path] = name
            value = param.value
            shown = ", ".join(_fmt(v) for v in value) if isinstance(value, list) else _fmt(value)
            return value, f"{name} ({shown})"
        if isinstance(raw, list):
            return raw, "{" + ", ".join(_fmt(v) for v in raw) + "}"
        return raw, _fmt(raw)

    def check_value(self, var: str, value: Any, kind: str, values: tuple[Any, ...] | None, path: Path_) -> bool:
        """Is ``value`` a possible value of ``var``?  Report when not."""
        if values is not None:
            if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in values):
                return True
            hint = did_you_mean(str(value), [str(v) for v in values])
            self.report(
                path,
                "unknown_value",
                f"'{_fmt(value)}' is not a value of '{var}'{hint}; "
                f"its values are: {', '.join(_fmt(v) for v in values)}",
                about=_subject(var),
            )
            return False
        expected = {"number": (int, float), "string": (str,), "date": (str,), "boolean": (bool,)}.get(kind)
        ok = expected is None or (isinstance(value, expected) and not (kind == "number" and isinstance(value, bool)))
        if not ok:
            self.report(
                path,
                "operand_type",
                f"'{var}' is of type {kind}; '{_fmt(value)}' is {_type_name(value)}",
                about=_subject(var),
            )
        return ok

    # -- conditions --------------------------------------------------------

    def condition(self, raw: Any, path: Path_) -> Condition | None:
        if not isinstance(raw, dict) or self.is_broken(path):
            return None
        combinators = [k for k in ("all", "any", "not") if k in raw]
        if combinators:
            if len(raw) > 1:
                self.report(
                    path,
                    "condition_mixed",
                    f"'{combinators[0]}' must stand alone in its mapping; put the other tests inside it",
                )
                return None
            key = combinators[0]
            if key == "not":
                inner = self.condition(raw["not"], (*path, "not"))
                return Not(inner) if inner is not None else None
            items = [self.condition(item, (*path, key, i)) for i, item in enumerate(_listing(raw[key]))]
            if not items:
                return None  # the schema pass has said what is wrong
            if any(item is None for item in items):
                return None
            kept = tuple(item for item in items if item is not None)
            return AllOf(kept) if key == "all" else AnyOf(kept)
        atoms: list[Condition] = []
        ok = True
        for var, test in raw.items():
            built = self.tests(str(var), test, (*path, var))
            if built is None:
                ok = False
            else:
                atoms.extend(built)
        if not ok or not atoms:
            return None
        return atoms[0] if len(atoms) == 1 else AllOf(tuple(atoms))

    def tests(self, var: str, test: Any, path: Path_) -> list[Atom] | None:
        found = self.resolve_var(var, path)
        if found is None:
            return None
        kind, values = found
        numeric = kind == "number" or (
            kind == "enum"
            and values is not None
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        )
        item_values = values if kind == "list" else None
        shorthand = not isinstance(test, dict) or set(test) == {"param"} or "var" in test
        ops: dict[str, Any] = {"equals": test} if shorthand else test
        atoms: list[Atom] = []
        ok = True
        where = self.loc(path)
        against = {k: raw for k, raw in ops.items() if k in COMPARE_OPS and isinstance(raw, dict) and "var" in raw}
        for key, raw in against.items():
            atom = self.compare(var, kind, key, raw, path if shorthand else (*path, key), where)
            ok = atom is not None and ok
            atoms.extend([atom] if atom is not None else [])
        for key, raw in ops.items():
            if key in COMPARISON_KEYS or key in against:
                continue
            op = OPPOSITE_KEYS.get(key, key)
            if op not in OPERATORS:  # the schema pass has reported it, with a suggestion
                ok = False
                continue
            op_path: Path_ = path if shorthand else (*path, key)
            if kind not in OPERATORS[op].types:
                self.report(
                    op_path,
                    "operator_type",
                    f"'{op}' does not apply to '{var}', which is of type {kind}",
                    key=not shorthand,
                    about=_subject(var),
                )
                ok = False
                continue
            if op == "present":
                wanted = bool(raw) != (key in OPPOSITE_KEYS)
                atoms.append(Atom(var, "present", wanted, "present" if wanted else "missing", where))
                continue
            resolved = self.operand(raw, op_path)
            if resolved is None:
                ok = False
                continue
            value, shown = resolved
            many = op in ("one_of", "not_one_of", "contains_all", "contains_any")
            if many and not isinstance(value, list):
                self.report(op_path, "operand_type", f"'{op}' needs a list of values")
                ok = False
                continue
            if not many and isinstance(value, list):
                self.report(op_path, "operand_type", f"'{op}' takes one value, not a list")
                ok = False
                continue
            check_kind, check_values = ("enum", item_values) if kind == "list" else (kind, values)
            for item in value if many else [value]:
                ok = self.check_value(var, item, check_kind, check_values, op_path) and ok
            operand = tuple(value) if many else value
            symbol = {
                "equals": "= ",
                "not_equals": "≠ ",
                "one_of": "∈ ",
                "not_one_of": "∉ ",
                "contains": "contains ",
                "contains_all": "contains all of ",
                "contains_any": "contains any of ",
            }[op]
            atoms.append(Atom(var, op, operand, symbol + shown, where, (_param_name(raw),)))
        comparisons = [k for k in COMPARISON_KEYS if k in ops and k not in against]
        if comparisons:
            interval = self.interval(var, ops, comparisons, numeric, path)
            if interval is None:
                ok = False
            else:
                bounds = (("gt", "gte"), ("lt", "lte"))
                params = tuple(_param_name(ops.get(a, ops.get(b))) for a, b in bounds)
                atoms.append(Atom(var, "interval", interval[0], interval[1], where, params))
        for atom in atoms:
            for number in numbers_of(atom):
                if not durable_safe(number):
                    self.report(
                        path,
                        "number_unreadable",
                        f"{number!r} cannot be given to durable-rules (it reads no exponent without a point); "
                        "scale the unit so the number is written plainly",
                        key=True,
                    )
                    ok = False
        return atoms if ok else None

    def compare(self, var: str, kind: str, op: str, raw: dict[str, Any], path: Path_, where: Location) -> Atom | None:
        """A test of ``var`` against another variable (``{gte: {var: other, times: factor}}``), type-checked."""
        other = str(raw.get("var"))
        found = self.resolve_var(other, (*path, "var"))
        if found is None:
            return None
        other_kind = found[0]
        if kind not in ("number", "date") or other_kind != kind:
            self.report(
                (*path, "var"),
                "operand_type",
                f"'{var}' is of type {kind} and '{other}' of type {other_kind}; "
                "compare a number with a number, or a date with a date",
                about=_subject(var),
            )
            return None
        if "times" not in raw:
            return Atom(var, "compare", Compare(op, other), COMPARE_OPS[op][3] + other, where, (None,))
        if kind != "number":
            self.report((*path, "times"), "operand_type", f"'times' scales a number; '{other}' is a date", key=True)
            return None
        resolved = self.operand(raw["times"], (*path, "times"))
        if resolved is None:
            return None
        factor, shown = resolved
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            self.report((*path, "times"), "operand_type", f"'times' needs a number, not {_type_name(factor)}")
            return None
        if not durable_safe(factor):
            self.report(
                (*path, "times"),
                "number_unreadable",
                f"{factor!r} cannot be given to durable-rules (it reads no exponent without a point); "
                "scale the unit so the number is written plainly",
                key=True,
            )
            return None
        text = f"{COMPARE_OPS[op][3]}{other} × {shown}"
        return Atom(var, "compare", Compare(op, other, factor), text, where, (_param_name(raw["times"]),))

    def interval(
        self, var: str, ops: dict[str, Any], keys: list[str], numeric: bool, path: Path_
    ) -> tuple[Interval, str] | None:
        if not numeric:
            self.report(
                (*path, keys[0]),
                "operator_type",
                f"'{keys[0]}' compares numbers; '{var}' is not a number",
                key=True,
                about=_subject(var),
            )
            return None
        bounds: dict[str, tuple[float, str]] = {}
        for key in keys:
            resolved = self.operand(ops[key], (*path, key))
            if resolved is None:
                return None
            value, shown = resolved
            if not isinstance(value, int | float) or isinstance(value, bool):
                self.report(
                    (*path, key),
                    "operand_type",
                    f"'{key}' needs a number, not {_type_name(value)}",
                    about=_subject(var),
                )
                return None
            bounds[key] = (value, shown)
        for a, b in (("gt", "gte"), ("lt", "lte")):
            if a in bounds and b in bounds:
                self.report((*path, b), "interval_bounds", f"give either '{a}' or '{b}', not both", key=True)
                return None
        low_key = "gt" if "gt" in bounds else ("gte" if "gte" in bounds else None)
        high_key = "lt" if "lt" in bounds else ("lte" if "lte" in bounds else None)
        low = bounds[low_key][0] if low_key else None
        high = bounds[high_key][0] if high_key else None
        interval = Interval(low, low_key == "gte", high, high_key == "lte")
        if (
            low is not None
            and high is not None
            and (low > high or (low == high and not (interval.low_closed and interval.high_closed)))
        ):
            self.report(
                (*path, low_key or "gt"),
                "interval_empty",
                f"no number is {low_key} {_fmt(low)} and {high_key} {_fmt(high)}: the interval is "
                + ("reversed" if low > high else "empty"),
                key=True,
            )
            return None
        symbols = {"gt": "> ", "gte": "≥ ", "lt": "< ", "lte": "≤ "}
        text = " and ".join(symbols[k] + bounds[k][1] for k in (low_key, high_key) if k)
        return interval, text
