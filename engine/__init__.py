"""The playbook engine: load -> validate -> compile -> evaluate -> explain.

``import engine`` stays light: no storage and no adapters are imported here.
"""

from engine.compile import CompiledPlaybook, compile_playbook
from engine.errors import CaseError, EngineFault, Location, PlaybookError, Problem
from engine.evaluate import Evaluator, Result
from engine.model import Playbook
from engine.validate import load_playbook, load_playbook_text

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
