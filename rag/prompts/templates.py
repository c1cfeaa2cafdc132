"""The texts prompts are made of, in one place: instructions, passages, code tasks.

The fixed instructions come first and byte-identical in every prompt, so vLLM's prefix cache
reuses them across queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.selectors.prompt import DemoTemplate
from rag.types import Demo, Hit, Message, Prompt

RAG_SYSTEM = (
    "You answer questions using the numbered passages. Answer briefly, and cite the passages "
    "you used by their numbers in square brackets, like [1]. If the passages do not contain the "
    "answer, say that you do not know."
)
CLOSED_BOOK_SYSTEM = "You answer questions briefly and accurately."
# FlashRAG-style short-answer instructions, so exact match measures the answer, not its phrasing.
# SHORT_ANSWER's "(a name)" suits vital-qa, whose answers are all titles, and hurts elsewhere:
# the KV and compression benchmarks were measured with it; QA defaults use BRIEF_ANSWER, chosen
# on two sets (benchmarks/qa_general.py).
SHORT_ANSWER = "Give only the answer (a name), no other words."
BRIEF_ANSWER = "Give only the answer, no other words."
PHRASE_ANSWER = "Answer with the shortest phrase from the passages that answers it, no other words."


def qa_system(answer: str = BRIEF_ANSWER) -> str:
    """The short-answer RAG instruction, with the sentence that says what form the answer takes."""
    return f"Answer the question using the numbered passages. {answer}"


# The user message of `rag_prompt`: numbered passages (`format_passages`), then the question.
RAG_USER = "Passages:\n{passages}\n\nQuestion: {question}"
# The same with the question also before the passages, so the model reads them knowing what is
# asked ("query-aware contextualization", Liu et al. 2023, Lost in the Middle).
RAG_USER_AROUND = "Question: {question}\n\n" + RAG_USER

SHORT_RAG_SYSTEM = qa_system(SHORT_ANSWER)
SHORT_CLOSED_BOOK_SYSTEM = f"Answer the question. {SHORT_ANSWER}"

SOLVE_PROMPT = (
    "Complete the following Python function. Reply with the whole function in one Python code "
    "block.\n\n```python\n{prompt}```"
)
# Plain-text code prompts (the LAIL paper's format): solved functions, then the one to complete.
# LAIL's feedback scores log P(program | example, task) under this same template.
CODE_COMPLETION = DemoTemplate(instruction="# Complete each Python function.", input_prefix="",
                               output_prefix="", output_lead="")


def format_passages(hits: Sequence[Hit]) -> str:
    """Passages numbered from 1 in the order given, each with its title line when it has one:
    the document's title, then the section the passage starts in (files read by `rag.ingest`)."""
    blocks = []
    for number, hit in enumerate(hits, 1):
        section = str(hit.chunk.metadata.get("section") or "")
        header = " / ".join(dict.fromkeys(part for part in (hit.chunk.title, section) if part))
        blocks.append(f"[{number}] {header}\n{hit.chunk.text}" if header
                      else f"[{number}] {hit.chunk.text}")
    return "\n\n".join(blocks)


def demo_turns(demos: Sequence[Demo]) -> list[Message]:
    """Demonstrations as earlier exchanges: the question as the user asked it, the gold answer."""
    return [message for demo in demos for message in (
        Message(role="user", content=f"Question: {demo.input}"),
        Message(role="assistant", content=demo.output))]


def chat(system: str, history: Sequence[Message], user: str) -> Prompt:
    return Prompt(messages=[Message(role="system", content=system), *history,
                            Message(role="user", content=user)])


def solve_chat(task_prompt: str, demos: Sequence[Demo] = ()) -> Prompt:
    """The chat that asks for a function; each demonstration is a solved exchange before it.

    A demonstration's input is its function's prompt and its output the body, so the
    assistant's turn is the whole function in a code block, the form the answer should take.
    """
    messages: list[Message] = []
    for demo in demos:
        messages += [Message(role="user", content=SOLVE_PROMPT.format(prompt=demo.input)),
                     Message(role="assistant", content=f"```python\n{demo.input}{demo.output}```")]
    messages.append(Message(role="user", content=SOLVE_PROMPT.format(prompt=task_prompt)))
    return Prompt(messages=messages)


def solve_completion(task_prompt: str, demos: Sequence[Demo] = ()) -> Prompt:
    """Plain text, as the LAIL paper prompts: solved functions, then the signature and docstring
    to complete. The model's continuation is the function body."""
    return Prompt(text=CODE_COMPLETION.plain(demos, task_prompt))
