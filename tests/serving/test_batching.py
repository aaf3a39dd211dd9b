"""The dynamic batcher under many concurrent submitters: no mix-ups, no oversized batch, no row
lost or run twice."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np

from transferkit.serving.batching import DynamicBatcher

MAX_BATCH = 8
CALLERS = 300


def test_many_concurrent_submitters_each_get_their_own_rows_back() -> None:
    batches: list[int] = []
    lock = threading.Lock()

    def run(x: np.ndarray) -> np.ndarray:  # float32 [n, 1, 1, 2] -> [n, 2], row by row
        with lock:
            batches.append(len(x))
        time.sleep(0.001)  # a model takes time: the queue builds up behind a run
        return x[:, 0, 0, :] * 10.0 + 1.0

    rng = random.Random(0)
    plan = [(rng.randint(1, 3), rng.choice("abc"), rng.random() * 0.003) for _ in range(CALLERS)]

    def rows_of(i: int, n: int) -> np.ndarray:  # caller i's row r holds (i, r)
        return np.array([[[[i, r]]] for r in range(n)], dtype=np.float32)

    async def caller(b: DynamicBatcher, i: int, n: int, path: str, delay: float) -> np.ndarray:
        await asyncio.sleep(delay)
        x = rows_of(i, n)
        if path == "a":  # as a request whose body is still being read and decoded
            with b.arriving():
                await asyncio.sleep(0)
            return await b.submit(x)
        if path == "b":  # as the runtime does: alone on an idle batcher, else queued
            out = await b.run_if_idle(lambda: x)
            return out if out is not None else await b.submit(x)
        return await b.submit(x)

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(run, max_batch_size=MAX_BATCH, max_queue_delay_ms=2.0, name="stress")
        b.start()
        try:
            tasks = [caller(b, i, n, path, delay) for i, (n, path, delay) in enumerate(plan)]
            return await asyncio.wait_for(asyncio.gather(*tasks), 120)
        finally:
            await b.stop()

    outs = asyncio.run(main())
    for i, ((n, _, _), out) in enumerate(zip(plan, outs)):
        want = rows_of(i, n)[:, 0, 0, :] * 10.0 + 1.0
        np.testing.assert_array_equal(out, want, err_msg=f"caller {i} got another's rows")
    assert max(batches) <= MAX_BATCH, batches
    assert sum(batches) == sum(n for n, _, _ in plan)  # every row ran, exactly once
    assert max(batches) > 1, batches  # the load did make batches (else the bound says nothing)


def _slow_runner(runs: list[int], seconds: float):
    def run(x: np.ndarray) -> np.ndarray:
        runs.append(len(x))
        time.sleep(seconds)
        return x.reshape(len(x), -1)[:, :1] * 2.0

    return run


def test_requests_arriving_while_a_run_is_busy_share_the_next_batch() -> None:
    """One count of runs in flight decides both the idle fast path and when a batch forms: the
    ten requests that arrive while the first runs alone wait for the runner and then run as one
    batch (before, the loop formed a batch of one at once and queued it behind the busy run)."""
    runs: list[int] = []

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(_slow_runner(runs, 0.4), max_batch_size=32, max_queue_delay_ms=0.0)
        b.start()

        async def request(i: int) -> np.ndarray:
            x = np.full((1, 1, 1, 1), float(i), dtype=np.float32)
            out = await b.run_if_idle(lambda: x)
            return out if out is not None else await b.submit(x)

        try:
            first = asyncio.create_task(request(0))
            await asyncio.sleep(0.01)  # the first request is running alone now
            rest = []
            for i in range(1, 11):  # one every 3 ms, all while the first runs (400 ms)
                rest.append(asyncio.create_task(request(i)))
                await asyncio.sleep(0.003)
            return await asyncio.wait_for(asyncio.gather(first, *rest), 30)
        finally:
            await b.stop()

    outs = asyncio.run(main())
    assert [float(o[0, 0]) for o in outs] == [2.0 * i for i in range(11)]
    assert runs == [1, 10], runs


def test_stop_lets_the_running_batch_answer() -> None:
    """Stopping the batcher while a batch runs waits for it: its requests get their rows, not a
    cancellation."""
    runs: list[int] = []

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(_slow_runner(runs, 0.1), max_batch_size=8, max_queue_delay_ms=0.0)
        b.start()
        xs = [np.full((1, 1, 1, 1), float(i), dtype=np.float32) for i in range(3)]
        tasks = [asyncio.create_task(b.submit(x)) for x in xs]
        await asyncio.sleep(0.03)  # the batch is in the runner
        await b.stop()
        return await asyncio.gather(*tasks)

    outs = asyncio.run(main())
    assert [float(o[0, 0]) for o in outs] == [0.0, 2.0, 4.0]
