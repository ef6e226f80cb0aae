"""What changed between two versions of a playbook, by id, not by line.

A reviewer reads "row ``funnel_layer.middle``: ``when`` changed", not a hunk of YAML: each
parameter, input, decision table, row, rule and action is matched by its id, and each change says
which of its keys changed (a label, a source, a condition, an output, a value) from what to what.
Rows and rules that keep their ids but change places are ``moved`` (under a ``first`` hit policy, or
for rules, order can matter).  Both playbooks must be valid: this compares what they say, as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.load import load_text
from engine.model import Playbook

__all__ = ["Change", "diff_playbooks", "render_diff"]

_SECTIONS = (("parameters", "parameter"), ("inputs", "input"), ("decisions", "table"), ("actions", "action"))


@dataclass(frozen=True)
class Change:
    """One thing added, removed, changed or moved.  ``fields``: (key path, old, new) for ``changed``."""

    kind: str  # playbook | parameter | input | table | row | rule | action
    id: str
    change: str  # added | removed | changed | moved
    fields: tuple[tuple[str, Any, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "change": self.change}
        if self.fields:
            out["fields"] = [{"field": name, "old": old, "new": new} for name, old, new in self.fields]
        return out


def _document(playbook: Playbook) -> dict[str, Any]:
    data = load_text(playbook.text, playbook.file).data
    return data if isinstance(data, dict) else {}


def _field_changes(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Changed keys of two mappings, by path (``label.en``); other values compared whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in dict.fromkeys([*old, *new]):
            name = f"{path}.{key}" if path else str(key)
            out += _field_changes(old.get(key), new.get(key), name)
        return out
    return [] if old == new and type(old) is type(new) else [(path, old, new)]


def _by_id(items: Any) -> dict[str, dict[str, Any]]:
    return (
        {str(item["id"]): item for item in items if isinstance(item, dict) and "id" in item}
        if isinstance(items, list)
        else {}
    )


def _moved(old_ids: list[str], new_ids: list[str]) -> list[str]:
    """Ids kept by both whose place among the kept ones differs."""
    kept = set(old_ids) & set(new_ids)
    before = [i for i in old_ids if i in kept]
    after = [i for i in new_ids if i in kept]
    return [i for i, j in zip(after, before, strict=True) if i != j]


def _listed(kind: str, prefix: str, old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...]) -> list[Change]:
    changes = []
    for name in dict.fromkeys([*old, *new]):
        ident = f"{prefix}{name}"
        if name not in new:
            changes.append(Change(kind, ident, "removed"))
        elif name not in old:
            changes.append(Change(kind, ident, "added"))
        else:
            before = {k: v for k, v in old[name].items() if k not in skip} if isinstance(old[name], dict) else old[name]
            after = {k: v for k, v in new[name].items() if k not in skip} if isinstance(new[name], dict) else new[name]
            fields = _field_changes(before, after)
            if fields:
                changes.append(Change(kind, ident, "changed", tuple(fields)))
    return changes


def diff_playbooks(old: Playbook, new: Playbook) -> list[Change]:
    """Every change from ``old`` to ``new``: the playbook's own keys, then each section in file order."""
    a, b = _document(old), _document(new)
    changes = _listed("playbook", "", {new.id: a.get("playbook", {})}, {new.id: b.get("playbook", {})}, ())
    for section, kind in _SECTIONS:
        before, after = a.get(section) or {}, b.get(section) or {}
        changes += _listed(kind, "", before, after, ("rows",) if section == "decisions" else ())
        if section != "decisions":
            continue
        for name in dict.fromkeys([*before, *after]):
            if name not in before or name not in after:
                continue  # the table's own change says it
            rows_a, rows_b = _by_id(before[name].get("rows")), _by_id(after[name].get("rows"))
            changes += _listed("row", f"{name}.", rows_a, rows_b, ())
            changes += [Change("row", f"{name}.{row}", "moved") for row in _moved(list(rows_a), list(rows_b))]
    rules_a, rules_b = _by_id(a.get("rules")), _by_id(b.get("rules"))
    changes += _listed("rule", "", rules_a, rules_b, ())
    changes += [Change("rule", rule, "moved") for rule in _moved(list(rules_a), list(rules_b))]
    return changes


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_MARK = {"added": "+", "removed": "-", "changed": "~", "moved": ">"}


def render_diff(changes: list[Change], fmt: str, old_name: str, new_name: str) -> str:
    """The changes as ``text`` (one line per change, a line per changed key), ``md`` (a table) or ``json``."""
    if fmt == "json":
        document = {"old": old_name, "new": new_name, "changes": [c.to_json() for c in changes]}
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if fmt == "md":
        if not changes:
            return f"No changes from `{old_name}` to `{new_name}`.\n"
        lines = [f"Changes from `{old_name}` to `{new_name}`:", "", "| change | kind | id | field | old | new |"]
        lines.append("|---|---|---|---|---|---|")
        for c in changes:
            cells = [(name, _shown(o), _shown(n)) for name, o, n in c.fields] or [("", "", "")]
            for name, o, n in cells:
                row = [c.change, c.kind, f"`{c.id}`", name, o, n]
                lines.append("| " + " | ".join(" ".join(x.split()).replace("|", "\\|") for x in row) + " |")
        return "\n".join(lines) + "\n"
    out = []
    for c in changes:
        out.append(f"{_MARK[c.change]} {c.kind} {c.id}" + ("" if c.fields else f" ({c.change})"))
        out += [f"    {name}: {_shown(o)} → {_shown(n)}" for name, o, n in c.fields]
    return "\n".join(out) + ("\n" if out else "")
