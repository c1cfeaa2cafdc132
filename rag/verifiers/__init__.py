"""Verifiers: the checks between generated answers and the user.

- `sandbox`: run untrusted generated code safely;
- `code`: programs from replies, checks from docstrings, execution with checks and probes;
- `codet`, `lever`, `consistency`, `pick`: choose one of n sampled programs or answers;
- `grounding`: flag answers their cited passages do not support;
- `stage`: the pipeline stages `extract_programs`, `execute`, `pick`, `vote` and `ground`.
"""

import rag.verifiers.fields  # noqa: F401 - registers the code state fields

from rag.verifiers.code import CodeCheck, Execution, Program, execute, program_for, run_unit_tests
from rag.verifiers.codet import codet_select, consensus_sets
from rag.verifiers.consistency import majority_answer, mbr_exec
from rag.verifiers.grounding import Grounding, check_grounding
from rag.verifiers.lever import LeverVerifier, lever_select
from rag.verifiers.sandbox import ExecResult, Sandbox, SandboxLimits

__all__ = [
    "CodeCheck",
    "ExecResult",
    "Execution",
    "Grounding",
    "LeverVerifier",
    "Program",
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
