"""Evaluation and batch inference on Ray: actors that each hold the pipeline (one engine each).

`ray_runner(...)` is a `rag.eval.runner.BatchRunner`: the eval runner hands it the batches still
to do and saves each batch's predictions as it comes back, so a Ray run resumes exactly as an
in-process one does and writes the same report. Each actor rebuilds the pipeline from its spec
(so the pipeline must round-trip: saved indexes, no in-memory ones), and batches go to whichever
actor is free.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rag.distributed import connect
from rag.eval.runner import BatchRunner
from rag.pipeline import Pipeline
from rag.state import State


class PipelineActor:
    """Holds one pipeline (and so one engine) built from its spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.pipeline = Pipeline.from_dict(spec)

    def run(self, index: int, inputs: list[Any]) -> tuple[int, list[State]]:
        return index, self.pipeline.run(inputs)


def ray_runner(actors: int = 2, address: str | None = None, cpus_per_actor: float = 1,
               gpus_per_actor: float = 0) -> BatchRunner:
    """A batch runner over `actors` Ray actors (a local cluster unless `address` is given)."""

    def run(pipeline: Pipeline, batches: list[list[Any]]) -> Iterator[tuple[int, list[State]]]:
        import ray
        from ray.util import ActorPool

        if not batches:
            return
        connect(address)
        remote = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(PipelineActor)
        spec = pipeline.to_dict()
        pool = ActorPool([remote.remote(spec) for _ in range(min(actors, len(batches)))])
        yield from pool.map_unordered(lambda actor, job: actor.run.remote(*job), list(enumerate(batches)))

    return run
