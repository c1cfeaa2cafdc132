"""Serving on Ray Serve: replicas of the same OpenAI-compatible app, kept alive by Ray.

The app is `rag.serving.create_app(config)`, built on each replica by Ray Serve's FastAPI
ingress (a builder, so engines start in the replica, never in the driver). Ray's proxy spreads
requests over the replicas, and Ray's controller replaces a replica that dies and autoscales
between `min_replicas` and `max_replicas` when they are given: none of that is code of ours.
"""

from __future__ import annotations

from typing import Any

from rag.distributed import connect
from rag.serving import ServeConfig, create_app

APP_NAME = "rag"


def deployment(config: ServeConfig, replicas: int = 2, cpus_per_replica: float = 1,
               gpus_per_replica: float = 0, autoscaling: dict[str, Any] | None = None,
               health_check_period_s: float = 2.0) -> Any:
    """A bound Ray Serve application: `replicas` copies of the app (or an autoscaling range).
    Health checks every 2 s (Ray's default is 10) so a dead replica stops getting requests sooner."""
    from ray import serve

    def build() -> Any:  # a function (not a partial): Ray Serve calls it on each replica
        return create_app(config)

    ingress = serve.ingress(build)()
    scaling = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
    return serve.deployment(ingress, name="OpenAIServer", **scaling,
                            health_check_period_s=health_check_period_s,
                            ray_actor_options={"num_cpus": cpus_per_replica,
                                               "num_gpus": gpus_per_replica}).bind()


def serve_on_ray(config: ServeConfig, replicas: int = 2, address: str | None = None,
                 blocking: bool = True, **options: Any) -> Any:
    """Start Ray Serve's HTTP proxy on the config's host and port and deploy the app there."""
    from ray import serve

    connect(address)
    serve.start(http_options={"host": config.host, "port": config.port})
    return serve.run(deployment(config, replicas, **options), name=APP_NAME, route_prefix="/",
                     blocking=blocking)
