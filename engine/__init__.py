"""The playbook engine: load -> validate -> compile -> evaluate -> explain.

``import engine`` is light: each name below is imported when first used (module ``__getattr__``,
PEP 562), so that a command pays only for the stages it runs; no storage and no adapters ever.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.compile import CompiledPlaybook, compile_playbook
    from engine.errors import CaseError, EngineFault, Location, PlaybookError, Problem
    from engine.evaluate import Evaluator, Result
    from engine.model import Playbook
    from engine.validate import load_playbook, load_playbook_text

# each public name -> the module that defines it
_HOMES = {
    "CaseError": "engine.errors",
    "CompiledPlaybook": "engine.compile",
    "EngineFault": "engine.errors",
    "Evaluator": "engine.evaluate",
    "Location": "engine.errors",
    "Playbook": "engine.model",
    "PlaybookError": "engine.errors",
    "Problem": "engine.errors",
    "Result": "engine.evaluate",
    "compile_playbook": "engine.compile",
    "load_playbook": "engine.validate",
    "load_playbook_text": "engine.validate",
}

__all__ = [
    "CaseError",
    "CompiledPlaybook",
    "EngineFault",
    "Evaluator",
    "Location",
    "Playbook",
    "PlaybookError",
    "Problem",
    "Result",
    "compile_playbook",
    "load_playbook",
    "load_playbook_text",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute '{name}'")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # asked once: later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
