"""``transferkit serve``: ONNX models behind HTTP."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from transferkit.config.base import Strict

__all__ = ["ServeConfig"]


class ServeConfig(Strict):
    """``transferkit serve``: ONNX models behind HTTP (Open Inference Protocol v2 + ``/v1``).

    Attributes:
        models: ``.onnx`` files; each is served under its file stem (``student.onnx`` ->
            ``student``), version ``"1"``. A single string is accepted for one model.
        repository: a Triton-style model repository ``REPO/<name>/<version>/model.onnx``; its
            models are served beside ``models``.
        name: name of the model when exactly one file is given (default: its stem).
        host: bind address (loopback by default; use 0.0.0.0 to expose).
        top_k: predictions returned per image by ``/v1/predict`` (capped at the class count).
        intra_op_threads: ONNX Runtime intra-op threads per model (0 = its share of the CPUs,
            CPUs // models served, at least 1 and at most 4; always
            capped at the CPUs this process may use).
        max_body_mb: request bodies larger than this get HTTP 413.
        max_image_pixels: images with more pixels (width x height) get HTTP 422.
        max_batch_size: dynamic batching: most images in one ORT run (1 = batching off).
        max_queue_delay_ms: how long a queued request may wait for its batch to fill while other
            requests are on their way (a lone request on an idle server never waits).
        max_queue_size: queued requests per model beyond which the server answers 503 with
            ``Retry-After``.
        body_timeout_s: a request body that takes longer than this to arrive gets HTTP 408; bodies
            are read before a request takes a queue slot, so slow clients never hold one.
        api_key: when set, every route but ``/v2/health/*`` requires ``Authorization: Bearer
            KEY`` or ``X-API-Key: KEY`` (HTTP 401 otherwise).
        graceful_timeout_s: on SIGINT/SIGTERM, in-flight requests get this long to finish.
        access_log: uvicorn's per-request access log (off by default: it costs latency).
        ray: deploy with Ray Serve instead of a single uvicorn process.
        replicas: Ray Serve replicas.
        replica_cpus: CPUs reserved per replica; its ORT intra-op threads equal this (at least 1).
    """

    models: list[str] = Field(default_factory=list)
    repository: str | None = None
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    top_k: int = Field(5, ge=1, le=1000)
    intra_op_threads: int = Field(0, ge=0, le=1024)
    max_body_mb: float = Field(20.0, gt=0.0)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_ms: float = Field(2.0, ge=0.0, le=10_000.0)
    max_queue_size: int = Field(256, ge=1, le=1_000_000)
    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    api_key: str | None = None
    graceful_timeout_s: float = Field(10.0, ge=0.0)
    access_log: bool = False
    ray: bool = False
    replicas: int = Field(1, ge=1, le=1024)
    replica_cpus: float = Field(1.0, gt=0.0, le=1024.0)

    @model_validator(mode="before")
    @classmethod
    def _one_model_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "model" in data:  # the one-model spelling of earlier versions
                one = data.pop("model")
                data["models"] = [
                    *([one] if isinstance(one, str) else list(one or [])),
                    *data.get("models", []),
                ]
            if isinstance(data.get("models"), str):
                data["models"] = [data["models"]]
        return data

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.models and not self.repository:
            raise ValueError(
                "models: give at least one .onnx file or a repository folder (repository=REPO)"
            )
        if self.name is not None and len(self.models) != 1:
            raise ValueError(
                f"name={self.name!r} needs exactly one model file; got {len(self.models)}: "
                "name models by their file stem or use a repository folder"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError(
                "api_key: must not be empty (leave it unset to turn authentication off)"
            )
        return self
