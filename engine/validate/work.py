"""Work and reviews: an action's owner, due date, repetition and escalation; the playbook's schedules."""

from __future__ import annotations

from typing import Any

from engine.errors import did_you_mean
from engine.model import Action
from engine.validate.common import Path_
from engine.validate.rules import Rules
from engine.workflow import WEEKDAYS, Due, Duration, Escalation, Schedule, Work, parse_duration


class WorkChecks(Rules):
    def duration(self, raw: Any, path: Path_, *, zero: bool = True) -> Duration | None:
        """A duration as written (``"2 weeks"``) or a parameter holding one (``{param: name}``)."""
        parameter = None
        if isinstance(raw, dict) and "param" in raw:
            parameter = str(raw["param"])
            if parameter not in self.parameters:
                self.report(
                    (*path, "param"),
                    "unknown_parameter",
                    f"unknown parameter '{parameter}'{did_you_mean(parameter, self.parameters)}",
                    about=("parameter", parameter),
                )
                return None
            raw = self.parameters[parameter].value
        parsed = parse_duration(raw) if isinstance(raw, str) else None
        if parsed is None or (not zero and parsed[0] == 0):
            whose = f"parameter '{parameter}' is '{raw}', which" if parameter else f"'{raw}'"
            self.report(
                ("parameters", parameter, "value") if parameter else path,
                "bad_duration",
                f"{whose} is not a span of time: write a whole number{'' if zero else ' above 0'} and a unit "
                "(day, week, month), e.g. '2 weeks'",
                about=("parameter", parameter) if parameter else None,
            )
            return None
        return Duration(parsed[0], parsed[1], parameter)

    def build_work(self, action: Action, spec: dict[str, Any], actions: dict[str, Action]) -> Action:
        """The action with its work, when it declares any (problems reported; the action kept)."""
        keys = ("owner", "due", "every", "escalate_after")
        if not any(k in spec for k in keys):
            return action
        path: Path_ = ("actions", action.id)
        due = self.due(spec.get("due"), (*path, "due")) if "due" in spec else None
        every = self.duration(spec["every"], (*path, "every"), zero=False) if "every" in spec else None
        escalate = None
        raw = spec.get("escalate_after")
        if isinstance(raw, dict):
            where: Path_ = (*path, "escalate_after")
            after = self.duration(raw.get("after"), (*where, "after"))
            target = raw.get("action")
            if target is not None and target not in actions:
                self.report(
                    (*where, "action"),
                    "unknown_action",
                    f"unknown action '{target}'{did_you_mean(str(target), actions)}",
                    about=("action", str(target)),
                )
            if "due" not in spec:
                self.report(
                    where,
                    "escalation_needs_due",
                    f"action '{action.id}' escalates a set time after it is due, but has no 'due'",
                    key=True,
                )
            if after is not None:
                escalate = Escalation(after, str(raw.get("to")), None if target is None else str(target))
        work = Work(owner=str(spec.get("owner", "account_manager")), due=due, every=every, escalate=escalate)
        return Action(
            id=action.id,
            label=action.label,
            explain=action.explain,
            source=action.source,
            location=action.location,
            param_labels=action.param_labels,
            work=work,
        )

    def due(self, raw: Any, path: Path_) -> Due | None:
        if not isinstance(raw, dict) or "param" in raw:
            offset = self.duration(raw, path)
            return None if offset is None else Due(offset)
        offset = self.duration(raw.get("by"), (*path, "by"))
        side = "before" if "before" in raw else "after"
        anchor = str(raw.get(side))
        field = self.inputs.get(anchor)
        if field is None:
            self.report(
                (*path, side),
                "unknown_input",
                f"unknown input '{anchor}'{did_you_mean(anchor, self.inputs)}",
                about=("input", anchor),
            )
            return None
        if field.type != "date":
            self.report(
                (*path, side),
                "anchor_not_date",
                f"a due date is counted from a date; input '{anchor}' is of type {field.type}",
            )
            return None
        return None if offset is None else Due(offset, anchor, before=side == "before")

    def build_schedule(self, name: str, spec: dict[str, Any]) -> Schedule | None:
        path: Path_ = ("schedules", name)
        label = self.text(spec.get("label"), (*path, "label"))
        source = self.source(spec.get("source"), (*path, "source"))
        if label is None or source is None:
            return None
        day = spec.get("weekday")
        return Schedule(
            id=name,
            calendar=str(spec.get("calendar")),
            weekday=WEEKDAYS.index(day) if day in WEEKDAYS else None,
            owner=str(spec.get("owner", "director")),
            brings=tuple(str(b) for b in spec.get("brings", ["open_work"])),
            label=label,
            source=source,
            location=self.doc.at(path, key=True),
        )
