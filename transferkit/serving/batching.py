"""Dynamic batching for one model: many requests, one ONNX Runtime run, one answer each.

Policy (Triton's dynamic batcher, made adaptive so that a lone request never waits):

* a batch starts as soon as the runner is free and a request is queued;
* it then takes every request already queued (up to ``max_batch_size`` rows) and, while other
  requests are still *on their way* (being read or preprocessed: :meth:`DynamicBatcher.arriving`),
  waits for them up to ``max_queue_delay_ms`` after the oldest queued request;
* with nothing on its way, it runs at once: a lone request on an idle server pays no window;
* only requests of one shape share a batch: a model with embedded preprocessing takes each image
  at its own size (uint8 ``[n, H, W, C]``), and arrays of different sizes cannot be stacked, so a
  batch takes the queued requests of its oldest request's shape and the others keep their place
  for the next one;
* one ORT run per batch, in one dedicated thread (batches of a model never overlap, so ORT's
  intra-op pool owns the cores); the ``[N, K]`` result is split back by request;
* one count of runs in flight (:attr:`DynamicBatcher.running`), written only on the event loop,
  decides both the idle fast path and when a batch may form: while the runner is busy requests
  queue up and join the next batch, instead of each running alone behind the busy runner.

The queue itself is bounded by admission control in the app (``max_queue_size``), not here.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DynamicBatcher"]


@dataclass
class _Item:
    x: np.ndarray  # float32 [n, C, H, W]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Collects ``[n, C, H, W]`` requests into batches for ``run``.

    Args:
        run: blocking function float32 ``[N, C, H, W]`` -> ``[N, ...]`` (e.g.
            ``OnnxClassifier.predict_batch``); called from one dedicated thread.
        max_batch_size: most rows per run (>= 1). A single request with more rows runs alone.
        max_queue_delay_ms: longest wait, after the oldest queued request, for requests on their
            way to join the batch (>= 0).
        on_batch: called with ``(rows, queue_times_s)`` after each run (metrics), on the event loop.
        name: thread name prefix (the model's name).

    Raises:
        ValueError: ``max_batch_size`` < 1 or ``max_queue_delay_ms`` < 0.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_queue_delay_ms: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1; got {max_batch_size}")
        if max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0; got {max_queue_delay_ms}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_queue_delay_ms / 1000.0
        self._on_batch = on_batch
        self._queue: collections.deque[_Item] = collections.deque()
        self._upstream = 0
        self._running = 0  # runs handed to the executor and not finished (event loop only)
        self._batch: list[_Item] = []  # the batch being formed or run, until it is answered
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the batching loop on the running event loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def running(self) -> int:
        """Runs (batches or lone requests) handed to the runner thread and not yet finished."""
        return self._running

    async def stop(self) -> None:
        """Finish the queued requests and the run in progress, then stop the loop and its thread
        (a batch already running is never cancelled: its requests get their answers)."""
        while self._queue or self._running or self._batch:
            await asyncio.sleep(0.001)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    # -- producer side -----------------------------------------------------------------------------

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (body being read, image being decoded) so that a batch in
        formation waits for it (up to the delay). Leave the block before :meth:`submit`."""
        self._upstream += 1
        try:
            yield
        finally:
            self._upstream -= 1
            self._poke()

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Queue ``x`` and wait for its rows of the batch result.

        Args:
            x: float32 ``[n, C, H, W]``, n >= 1.

        Returns:
            The run's output rows for ``x`` (``[n, ...]``).

        Raises:
            RuntimeError: the batcher is not started.
            Exception: whatever ``run`` raised for the batch holding ``x``.
        """
        if self._task is None:
            raise RuntimeError("DynamicBatcher.submit before start()")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(x, fut))
        self._poke()
        return await fut

    async def run_if_idle(self, prepare: Callable[[], np.ndarray]) -> np.ndarray | None:
        """Run one request at once, in a single thread hop, when nothing else is queued, on its
        way or running: a lone request on an idle server pays neither the window nor a second
        hop. Returns None (do :meth:`submit`) when the server is not idle.

        Args:
            prepare: blocking ``() -> float32 [n, C, H, W]`` (decode + preprocess), run in the
                executor just before the model.
        """
        if self._running or self._queue or self._batch or self._upstream or self._task is None:
            return None
        self._running += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: self._run(prepare())
            )
        finally:
            self._running -= 1
            self._poke()
        if self._on_batch is not None:
            self._on_batch(len(out), [0.0])
        return out

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- consumer side -----------------------------------------------------------------------------

    def _take(self, batch: list[_Item], rows: int) -> int:
        """Move queued items into ``batch`` while they fit; the new row count. Items of another
        shape than the batch's first (bar the row count) stay queued, in order, for the next."""
        skipped: list[_Item] = []
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # the client went away while queued
                self._queue.popleft()
                continue
            if batch and item.x.shape[1:] != batch[0].x.shape[1:]:
                skipped.append(self._queue.popleft())
                continue
            if batch and rows + len(item.x) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += len(item.x)
        self._queue.extendleft(reversed(skipped))
        return rows

    async def _collect(self) -> list[_Item]:
        """Wait for a queued request and a free runner, then form the batch."""
        assert self._wake is not None
        while not self._queue or self._running:
            self._wake.clear()
            await self._wake.wait()
        batch: list[_Item] = []
        self._batch = batch
        rows = self._take(batch, 0)
        if not batch:
            return batch
        deadline = batch[0].enqueued + self.max_delay_s
        while rows < self.max_batch_size and self._upstream > 0 and not self._queue:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
            rows = self._take(batch, rows)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                batch = await self._collect()
                if batch:
                    await self._answer(loop, batch)
            except asyncio.CancelledError:  # the loop itself stopped: no request is left waiting
                for item in [*self._batch, *self._queue]:
                    if not item.future.done():
                        item.future.cancel()
                raise
            finally:
                self._batch = []

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        """Run one batch and hand each request its rows (or the run's exception)."""
        started = time.perf_counter()
        rows = sum(len(i.x) for i in batch)
        self._running += 1
        try:
            out = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        finally:
            self._running -= 1
            self._poke()
        start = 0
        for item in batch:
            n = len(item.x)
            if not item.future.done():
                item.future.set_result(out[start : start + n])
            start += n
        if self._on_batch is not None:
            self._on_batch(rows, [started - i.enqueued for i in batch])

    def _run_batch(self, batch: list[_Item]) -> np.ndarray:
        """In the runner thread: stack the batch's inputs (rows in order) and run them once."""
        x = batch[0].x if len(batch) == 1 else np.concatenate([i.x for i in batch], axis=0)
        return self._run(x)
