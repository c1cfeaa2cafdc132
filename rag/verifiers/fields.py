"""The per-query state fields code generation adds to a pipeline (registered on import)."""

from rag.state import state_field
from rag.verifiers.code import CodeCheck, Execution, Program

state_field("entry_point", str | None, given=True,
            description="the function a code task asks for; else the last one its query defines")
state_field("programs", list[Program], default=list,
            description="one program per sampled completion, in sample order")
state_field("checks", list[CodeCheck], default=list,
            description="assert statements every program ran against")
state_field("executions", list[Execution], default=list,
            description="how each program ran against the checks and probes")
