"""The serving runtime: models by name and version, their lifecycle, admission and batching.

Knows nothing of HTTP (no FastAPI, no Starlette): the HTTP layer (:mod:`.app`) calls it and maps
its errors (:mod:`.errors`) to statuses. Lifecycle after KServe's ``Model``: a model loads and
warms up in a worker thread, then it is ready; a failed load keeps its reason for the readiness
answer. Inference runs through each model's :class:`~transferkit.serving.batching.DynamicBatcher`
(batching on) or straight in a worker thread (batching off); the event loop never blocks on
decoding or ONNX Runtime.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path

import numpy as np
from anyio import CapacityLimiter, to_thread

from transferkit.errors import UsageError
from transferkit.metadata import MetadataError
from transferkit.serving.batching import DynamicBatcher
from transferkit.serving.errors import (
    ModelNotReadyError,
    QueueFullError,
    ShuttingDownError,
    UnknownModelError,
)
from transferkit.serving.limits import ServingLimits
from transferkit.serving.metrics import ServerMetrics
from transferkit.serving.model import ModelLoadError, OnnxClassifier
from transferkit.serving.providers import available_cpus, resolve_threads
from transferkit.serving.repository import ModelSource

__all__ = ["ModelEntry", "ServingRuntime", "ModelSpec", "model_sources"]

log = logging.getLogger(__name__)

#: What a server may be given to serve: a loaded model, an ``.onnx`` path, or a source.
ModelSpec = str | Path | OnnxClassifier | ModelSource


class ModelEntry:
    """One served model version: its session (once loaded), batcher and admission count.

    Args:
        source: name, version and file.
        clf: the loaded model, or None to load it in :meth:`load`.
        limits: threads, batching and queue limits.
        metrics: where batches and in-flight requests are counted.
        threads: ORT intra-op threads for a model this entry loads (its share of the CPUs,
            :func:`~transferkit.serving.providers.resolve_threads`).
        concurrency: most ORT runs of this model at once with batching off (its CPU share over
            ``threads``, at least 1); requests beyond it wait for a run to finish instead of
            oversubscribing the cores. With batching on, one run at a time (the batcher's).
    """

    def __init__(
        self,
        source: ModelSource,
        clf: OnnxClassifier | None,
        limits: ServingLimits,
        metrics: ServerMetrics,
        threads: int = 1,
        concurrency: int = 1,
    ) -> None:
        self.source = source
        self.threads = threads
        self._runs = CapacityLimiter(max(1, concurrency))
        self.name = source.name
        self.version = source.version
        self.clf = clf
        self.problem = f"model {source.name!r} version {source.version} is loading"
        self.batcher: DynamicBatcher | None = None
        self.inflight = 0
        self._limits = limits
        self._metrics = metrics

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, and (with batching) its batcher running."""
        return self.clf is not None and (not self._limits.batching or self.batcher is not None)

    def get(self) -> OnnxClassifier:
        """The loaded model.

        Returns:
            The model, ready for inference.

        Raises:
            ModelNotReadyError: still loading, or loading failed (the message says which).
        """
        if not self.ready:
            raise ModelNotReadyError(self.problem)
        assert self.clf is not None
        return self.clf

    async def load(self) -> None:
        """Load and warm the session in a worker thread, then start the batcher (batching on).

        A failed load is not raised: its reason becomes :attr:`problem`, which the readiness
        answer reports.
        """
        if self.clf is None:
            open_model = functools.partial(
                OnnxClassifier,
                self.source.path,
                name=self.name,
                version=self.version,
                intra_op_threads=self.threads,
            )
            try:
                self.clf = await to_thread.run_sync(open_model)
            except (ModelLoadError, MetadataError, OSError, ValueError) as exc:
                self.problem = f"model {self.name!r} version {self.version} failed to load: {exc}"
                log.error("%s", self.problem)
                return
        if self._limits.batching and self.batcher is None:
            metrics, name = self._metrics, self.name
            batcher = DynamicBatcher(
                self.clf.predict_batch,
                self._limits.max_batch_size,
                self._limits.max_queue_delay_ms,
                on_batch=lambda rows, waits: metrics.observe_batch(name, rows, waits),
                name=self.name,
            )
            batcher.start()
            self.batcher = batcher

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[OnnxClassifier]:
        """Hold one of the model's ``max_queue_size`` request slots for the block.

        Yields:
            The loaded model.

        Raises:
            ModelNotReadyError: not loaded.
            QueueFullError: every slot is taken (the client should retry later).
        """
        clf = self.get()
        limit = self._limits.max_queue_size
        if self.inflight >= limit:
            raise QueueFullError(
                f"model {self.name!r} has {self.inflight} requests queued (limit {limit}); retry later"
            )
        self.inflight += 1
        gauge = self._metrics.inflight.labels(self.name)
        gauge.inc()
        try:
            yield clf
        finally:
            self.inflight -= 1
            gauge.dec()

    def arriving(self) -> AbstractContextManager[None]:
        """While a request reads and decodes its input: a batch in formation waits for it.

        Returns:
            A context manager (a no-op with batching off).
        """
        return self.batcher.arriving() if self.batcher is not None else nullcontext()

    def _observe_direct(self, rows: int) -> None:
        self._metrics.observe_batch(self.name, rows, [0.0])

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of preprocessed images, batched with other requests of the same shape.

        Args:
            x: float32 ``[N, C, H, W]``; uint8 ``[N, H, W, C]`` for a model with embedded
                preprocessing (:attr:`OnnxClassifier.embedded`).

        Returns:
            float32 logits ``[N, K]`` (probabilities with embedded preprocessing).

        Raises:
            ModelNotReadyError: not loaded.
        """
        clf = self.get()
        if self.batcher is not None:
            out = await self.batcher.run_if_idle(lambda: x)
            return out if out is not None else await self.batcher.submit(x)
        out = await to_thread.run_sync(clf.predict_batch, x, limiter=self._runs)
        self._observe_direct(len(x))
        return out

    async def infer_image(self, data: bytes) -> np.ndarray:
        """Decode, preprocess and run one encoded image (PNG, JPEG, ...).

        With embedded preprocessing the image goes to the graph at its own size (uint8
        ``[1, H, W, C]``), so it shares a batch only with images of the same size.

        Args:
            data: the file's bytes.

        Returns:
            float32 logits ``[1, K]``.

        Raises:
            ModelNotReadyError: not loaded.
            ImageTooLargeError: more than ``max_image_pixels`` pixels (checked from the header).
            ImageDecodeError: not a decodable image.
        """
        clf = self.get()
        max_pixels = self._limits.max_image_pixels

        def prepare() -> np.ndarray:
            return clf.preprocess(clf.decode(data, max_pixels))[None]

        if self.batcher is None:  # batching off: decode, preprocess and run in one thread hop
            out = await to_thread.run_sync(lambda: clf.predict_batch(prepare()), limiter=self._runs)
            self._observe_direct(1)
            return out
        out = await self.batcher.run_if_idle(prepare)  # an idle server: one hop, no window
        if out is not None:
            return out
        with self.batcher.arriving():
            x = await to_thread.run_sync(prepare)
        return await self.batcher.submit(x)


def model_sources(
    models: ModelSpec | Sequence[ModelSpec], name: str | None = None
) -> tuple[list[ModelSource], dict[tuple[str, str], OnnxClassifier]]:
    """Normalise what a server is given into sources and the already-loaded models.

    Args:
        models: one or several loaded models, ``.onnx`` paths (served as the stem, version "1")
            or :class:`ModelSource`.
        name: the name of the model when exactly one is given.

    Returns:
        The sources in order, and the loaded models by ``(name, version)``.

    Raises:
        ValueError: no models, a duplicate (name, version), or ``name`` with several models.
    """
    items = list(models) if isinstance(models, (list, tuple)) else [models]
    if not items:
        raise UsageError("no models to serve")
    if name is not None and len(items) != 1:
        raise UsageError(f"name={name!r} needs exactly one model; got {len(items)}")
    sources: list[ModelSource] = []
    loaded: dict[tuple[str, str], OnnxClassifier] = {}
    for m in items:
        if isinstance(m, OnnxClassifier):
            if name is not None:
                m.name = name
            src = ModelSource(m.name, m.version, m.path)
            loaded[(src.name, src.version)] = m
        elif isinstance(m, ModelSource):
            src = m
        else:
            src = ModelSource(name or Path(m).stem, "1", Path(m))
        if any((s.name, s.version) == (src.name, src.version) for s in sources):
            raise UsageError(f"model {src.name!r} version {src.version} is given twice")
        sources.append(src)
    return sources, loaded


class ServingRuntime:
    """The served models by name and version, their limits, metrics and shutdown state.

    Args:
        models: as in :func:`model_sources`; the first is the default model.
        limits: the serving limits.
        name: the model's name when exactly one is given.

    Raises:
        ValueError: as :func:`model_sources`.
    """

    def __init__(
        self,
        models: ModelSpec | Sequence[ModelSpec],
        limits: ServingLimits,
        name: str | None = None,
    ) -> None:
        sources, loaded = model_sources(models, name)
        self.limits = limits
        self.metrics = ServerMetrics()
        self.draining = False
        self.models: dict[str, dict[str, ModelEntry]] = {}
        # the CPUs are split across the served models (two models on 2 CPUs: 1 thread each)
        threads = resolve_threads(limits.intra_op_threads, models=len(sources))
        share = max(1, available_cpus() // len(sources))
        for src in sources:
            clf = loaded.get((src.name, src.version))
            t = clf.intra_op_threads if clf is not None else threads
            entry = ModelEntry(src, clf, limits, self.metrics, t, max(1, share // t))
            self.models.setdefault(src.name, {})[src.version] = entry
        self.default_name = sources[0].name

    # -- lookup ----------------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """Served versions of a model, oldest first (numeric order when numeric).

        Args:
            name: the model's name.

        Returns:
            The versions; empty for an unknown name.
        """
        return sorted(
            self.models.get(name, {}),
            key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v),
        )

    def entry(self, name: str | None, version: str | None = None) -> ModelEntry:
        """The served model ``name`` (default: the first), at ``version`` (default: the latest).

        Args:
            name: the model's name, or None for the default model.
            version: the version, or None for the latest.

        Returns:
            The model's entry.

        Raises:
            UnknownModelError: no such model or version; the message lists the known ones.
        """
        name = name or self.default_name
        by_version = self.models.get(name)
        if by_version is None:
            raise UnknownModelError(f"unknown model {name!r}; served models: {sorted(self.models)}")
        if version is None:
            version = self.versions(name)[-1]
        entry = by_version.get(version)
        if entry is None:
            raise UnknownModelError(
                f"model {name!r} has no version {version!r}; served versions: {self.versions(name)}"
            )
        return entry

    def entries(self) -> list[ModelEntry]:
        """Every served model version, in order."""
        return [e for by_v in self.models.values() for e in by_v.values()]

    @property
    def ready(self) -> bool:
        """Every model is ready and the server is not shutting down."""
        return not self.draining and all(e.ready for e in self.entries())

    def check_ready(self) -> None:
        """Raise unless every model is ready and the server takes requests.

        Raises:
            ShuttingDownError: the server is draining.
            ModelNotReadyError: a model is loading or failed to load (the first such one).
        """
        if self.draining:
            raise ShuttingDownError("the server is shutting down")
        for e in self.entries():
            e.get()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (when needed) and warm every model, start the batchers."""
        for e in self.entries():
            await e.load()

    async def stop(self) -> None:
        """Refuse new requests, then stop the batchers after their queues drain."""
        self.draining = True
        for e in self.entries():
            if e.batcher is not None:
                await e.batcher.stop()
                e.batcher = None
