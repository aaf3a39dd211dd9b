"""Scale-out: the same serving app as a Ray Serve deployment (``transferkit serve --ray``).

Ray is imported inside the functions only (``import transferkit.serving`` stays torch- and
ray-free). Each replica builds the very app of :func:`~transferkit.serving.app.create_app` at
replica start (``serve.ingress`` with ``__serve_build_asgi_app__``), with ONNX Runtime's intra-op
threads equal to the replica's CPUs (Ray sets ``OMP_NUM_THREADS``, which ORT ignores), and its own
dynamic batcher; Serve's proxy answers the same routes on the chosen port. ``max_ongoing_requests``
is at least twice the batch size, so Serve's per-replica cap never starves a batch (its default,
5, would). Needs the ``serve`` extra: ``pip install 'transferkit[serve]'``.

On 2 CPUs Serve's proxy hop costs ~17 ms per request (see NOTES): use it to scale out over nodes,
not for single-node latency.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from transferkit.config import ServeConfig
from transferkit.serving.repository import ModelSource

__all__ = ["build_deployment", "serve_ray", "replica_threads", "max_ongoing_requests"]

log = logging.getLogger(__name__)

APP_NAME = "transferkit"


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica is built from, handed to Serve as typed objects (pickled by Ray).

    Attributes:
        sources: the model files (absolute paths), checked on the driver.
        threads: ONNX Runtime intra-op threads of each replica (:func:`replica_threads`).
        cfg: the serve configuration (limits, API key).
    """

    sources: tuple[ModelSource, ...]
    threads: int
    cfg: ServeConfig


def replica_threads(replica_cpus: float) -> int:
    """ORT intra-op threads of a replica.

    Args:
        replica_cpus: CPUs Ray reserves for the replica.

    Returns:
        Their whole number, at least 1.
    """
    return max(1, int(math.floor(replica_cpus)))


def max_ongoing_requests(cfg: ServeConfig) -> int:
    """Serve's per-replica cap on concurrent requests.

    Args:
        cfg: the serve configuration.

    Returns:
        At least ``2 * max_batch_size`` and 8, so the cap never starves a batch.
    """
    return max(2 * cfg.max_batch_size, 8)


def build_deployment(cfg: ServeConfig) -> Any:
    """The bound Serve application for ``cfg`` (``serve.run`` it).

    Args:
        cfg: models, limits, ``replicas`` and ``replica_cpus``.

    Returns:
        A ``ray.serve.Application``.

    Raises:
        ImportError: Ray Serve is not installed (install the ``serve`` extra).
    """
    try:
        from ray import serve
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("Ray Serve is not installed: pip install 'transferkit[serve]'") from exc
    from transferkit.serving.repository import discover_models

    sources = discover_models(cfg.models, cfg.repository, cfg.name)  # fail here, not in a replica
    spec = ReplicaSpec(
        sources=tuple(replace(s, path=s.path.resolve()) for s in sources),
        threads=replica_threads(cfg.replica_cpus),
        cfg=cfg,
    )

    class TransferkitReplica:
        """One Serve replica: the transferkit FastAPI app over its own ORT sessions."""

        def __init__(self, spec: ReplicaSpec) -> None:
            self.spec = spec

        def __serve_build_asgi_app__(self) -> Any:
            from transferkit.serving.app import create_app
            from transferkit.serving.limits import ServingLimits
            from transferkit.serving.model import OnnxClassifier

            c = self.spec.cfg
            # the replica's CPUs are split across its models, as in the plain server
            threads = max(1, self.spec.threads // max(1, len(self.spec.sources)))
            models = [
                OnnxClassifier(
                    str(s.path), name=s.name, version=s.version, intra_op_threads=threads
                )
                for s in self.spec.sources
            ]
            limits = replace(ServingLimits.from_config(c), intra_op_threads=threads)
            return create_app(models, limits=limits, api_key=c.api_key)

    ingress = serve.ingress()(TransferkitReplica)
    deployment = serve.deployment(
        ingress,
        name="TransferkitReplica",
        num_replicas=cfg.replicas,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
        max_ongoing_requests=max_ongoing_requests(cfg),
    )
    return deployment.bind(spec)


def serve_ray(cfg: ServeConfig) -> None:
    """Deploy on Ray Serve and stay in the foreground until Ctrl+C / SIGTERM, then tear down.

    Joins the cluster named by ``RAY_ADDRESS`` when set, else starts a local one. Serve's HTTP
    proxy listens on ``cfg.host:cfg.port`` with route prefix ``/``.

    Args:
        cfg: models, limits, address, ``replicas`` and ``replica_cpus``.

    Raises:
        ImportError: Ray Serve is not installed.
        FileNotFoundError, ValueError: the models cannot be found or named.
    """
    import os
    import signal

    import ray
    from ray import serve

    app = build_deployment(cfg)
    started_ray = not ray.is_initialized()
    if started_ray:  # Ray's own authentication settings apply (token auth is Ray's default)
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level="WARNING")
    stop = {"flag": False}

    def _stop(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old_term = signal.signal(signal.SIGTERM, _stop)
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        log.info(
            "Ray Serve: %d replica(s) at http://%s:%d (Ctrl+C to stop)",
            cfg.replicas,
            cfg.host,
            cfg.port,
        )
        while not stop["flag"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        try:
            serve.delete(APP_NAME)
            serve.shutdown()
        finally:
            if started_ray:
                ray.shutdown()
