"""Verifiers: the checks between generated answers and the user.

- `sandbox`: run untrusted generated code safely;
- `code`: programs from replies, checks from docstrings, execution with checks and probes;
- `codet`, `lever`, `consistency`: choose one of n sampled programs or answers;
- `grounding`: flag answers their cited passages do not support.
"""

from rag.verifiers.code import Execution, execute, program_for, run_unit_tests
from rag.verifiers.codet import codet_select, consensus_sets
from rag.verifiers.consistency import majority_answer, mbr_exec
from rag.verifiers.grounding import Grounding, check_grounding
from rag.verifiers.lever import LeverVerifier, lever_select
from rag.verifiers.sandbox import ExecResult, Sandbox, SandboxLimits

__all__ = [
    "ExecResult",
    "Execution",
    "Grounding",
    "LeverVerifier",
    "Sandbox",
    "SandboxLimits",
    "check_grounding",
    "codet_select",
    "consensus_sets",
    "execute",
    "lever_select",
    "majority_answer",
    "mbr_exec",
    "program_for",
    "run_unit_tests",
]
