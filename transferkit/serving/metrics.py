"""Prometheus metrics of the server (prometheus-client), one registry per app.

Exposed at ``GET /metrics`` in the text format 0.0.4. Families (``model`` is the served model's
name, empty for routes that name no model):

* ``transferkit_requests_total{model, code}``: answered requests by HTTP status;
* ``transferkit_request_errors_total{model, code}``: the subset with status >= 400;
* ``transferkit_request_latency_seconds{model}``: histogram, request received -> response sent;
* ``transferkit_queue_time_seconds{model}``: histogram, queued -> its batch starts;
* ``transferkit_batch_size{model}``: histogram of rows per ONNX Runtime run;
* ``transferkit_inflight_requests{model}``: gauge of admitted, unanswered inference requests;
* ``transferkit_receiving_requests{model}``: gauge of inference requests whose body is still
  arriving (not yet admitted: a slow client shows here, never in a queue slot).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The metric families of one app, in their own :class:`CollectorRegistry` (several apps in
    one process, as in tests, do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "transferkit_requests",
            "Answered requests by model and HTTP status.",
            ["model", "code"],
            registry=r,
        )
        self.errors = Counter(
            "transferkit_request_errors",
            "Requests answered with status >= 400.",
            ["model", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "transferkit_request_latency_seconds",
            "Request latency in the server.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "transferkit_queue_time_seconds",
            "Time from queued to batch start.",
            ["model"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "transferkit_batch_size",
            "Rows per ONNX Runtime run.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "transferkit_inflight_requests",
            "Admitted, unanswered inference requests.",
            ["model"],
            registry=r,
        )
        self.receiving = Gauge(
            "transferkit_receiving_requests",
            "Inference requests whose body is still arriving (not yet admitted).",
            ["model"],
            registry=r,
        )

    def observe_request(self, model: str, code: int, seconds: float) -> None:
        """Count one answered request.

        Args:
            model: the model's name ("" for routes that name none).
            code: the HTTP status.
            seconds: time from request received to response sent.
        """
        label = str(code)
        self.requests.labels(model, label).inc()
        if code >= 400:
            self.errors.labels(model, label).inc()
        self.latency.labels(model).observe(seconds)

    def observe_batch(self, model: str, rows: int, queue_times_s: list[float]) -> None:
        """Record one ORT run and how long each of its requests queued.

        Args:
            model: the model's name.
            rows: rows in the run.
            queue_times_s: per request of the batch, seconds from queued to the run's start.
        """
        self.batch_size.labels(model).observe(rows)
        h = self.queue_time.labels(model)
        for t in queue_times_s:
            h.observe(max(0.0, t))

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format.

        Returns:
            The page, UTF-8.
        """
        return generate_latest(self.registry)
