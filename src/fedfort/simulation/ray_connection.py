"""Connecting to Ray: a private local instance, or a cluster this process joins.

:class:`RayConnection` is what the Ray runtime (:mod:`fedfort.simulation.ray_runtime`) uses to
reach Ray. A private local instance has its own temp directory, listens on loopback only, has
no dashboard, logs only errors and sends no usage statistics; joining a cluster probes the
head first, so a wrong address fails in seconds instead of Ray's minutes of retries.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from fedfort.config import SimulationConfig
from fedfort.errors import ConfigError

__all__ = ["RayConnection", "RayOptions", "import_ray"]

_QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
_LOCAL_OBJECT_STORE_BYTES = 256 << 20


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "simulation.runtime = 'ray' needs Ray: pip install 'fedfort[ray]'"
        ) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where the Ray runtime runs and what each client reserves (``[simulation]`` keys)."""

    address: str | None = None
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    actors: int | None = None
    torch_threads: int = 1

    @classmethod
    def from_config(cls, sim: SimulationConfig) -> RayOptions:
        return cls(
            address=sim.ray_address,
            cpus_per_client=sim.ray_cpus_per_client,
            gpus_per_client=sim.ray_gpus_per_client,
            actors=sim.ray_actors,
            torch_threads=sim.torch_threads,
        )

    @property
    def local_cpus(self) -> int:
        """Logical CPUs of a private local instance: 2, or what the actor pool asks for."""
        if self.actors is None:
            return max(2, math.ceil(self.cpus_per_client))
        return max(1, math.ceil(self.actors * self.cpus_per_client))


class RayConnection:
    """This process's connection to Ray: a private local instance or a joined cluster.

    :meth:`close` shuts down only what :meth:`open` started (and removes its session files);
    a connection that already existed, or a cluster that was joined, is left alone.
    """

    def __init__(self, started: bool, temp_dir: str | None = None) -> None:
        self.started = started
        self.temp_dir = temp_dir

    @classmethod
    def open(cls, address: str | None = None, *, local_cpus: int = 2) -> RayConnection:
        ray = import_ray()
        if ray.is_initialized():
            _same_cluster(ray, address)
            return cls(started=False)
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)
        quiet: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        if address is not None:
            _probe(address)
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"could not join the Ray cluster at {address!r} ({exc}); start one with "
                    "`ray start --head` or leave simulation.ray_address unset for a local Ray"
                ) from None
            return cls(started=False)
        temp_dir = tempfile.mkdtemp(prefix="fedfort-ray-")
        try:
            ray.init(
                num_cpus=local_cpus,
                object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                _temp_dir=temp_dir,
                _node_ip_address="127.0.0.1",  # a private instance listens on loopback only
                **quiet,
            )
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        return cls(started=True, temp_dir=temp_dir)

    def close(self) -> None:
        if self.started:
            import_ray().shutdown()
            self.started = False
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def _same_cluster(ray: Any, address: str | None) -> None:
    """Refuse an explicit address other than the cluster this process is connected to."""
    if address is None or address == "auto":
        return
    current = ray.get_runtime_context().gcs_address
    # a head may be reached under several host names and addresses; its port tells clusters
    # of one machine apart
    if address.rpartition(":")[2] != current.rpartition(":")[2]:
        raise ConfigError(
            f"this process is already connected to the Ray cluster at {current}, not "
            f"{address}: leave simulation.ray_address unset to use it, or run fedfort in a "
            "fresh process"
        )


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when ``HOST:PORT`` does not answer (``ray.init`` would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"no Ray head answers at {address} ({exc}): check the address, or start the "
            f"cluster with `ray start --head --port={port}` on that machine"
        ) from None
