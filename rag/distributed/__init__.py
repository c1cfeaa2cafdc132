"""Running the library's work on a Ray cluster (a local one when no address is given)."""

from __future__ import annotations


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address` (or start a local one), unless this process already has."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
