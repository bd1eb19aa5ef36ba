"""Micro-batching of U-Net work across frames and concurrent streams.

Streams submit single items and await their results; a worker collects items up to
`max_batch` or until `max_wait_ms` has passed since the first one, runs the batch in a
thread (the model call releases the GIL), and resolves each item's future. Each stream
awaits its own futures in submission order, so per-stream order is kept by construction.

A batch that runs past `deadline_s` fails its items with `stall_error(size, deadline_s)`
and reports unhealthy through `on_health(False)`; the worker then waits for the stalled call
to return (the device is still busy with it) and reports healthy again once a batch call
returns. `on_batch(size, queue_waits)` sees every batch as it starts (metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from synctalk.log import get_logger

Item = TypeVar("Item")
Result = TypeVar("Result")

log = get_logger("synctalk.render.batcher")


class MicroBatcher(Generic[Item, Result]):
    """Collects items from many coroutines into batches for one blocking batch function."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        max_batch: int,
        max_wait_ms: float,
        *,
        deadline_s: float = 0.0,
        stall_error: Callable[[int, float], BaseException] | None = None,
        on_health: Callable[[bool], Awaitable[None]] | None = None,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if deadline_s < 0:
            raise ValueError("deadline_s must be >= 0 (0 = no deadline)")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.deadline_s = deadline_s
        self._stall_error = stall_error or (
            lambda size, limit: TimeoutError(f"a batch of {size} ran past its {limit:g} s deadline"))
        self._on_health = on_health
        self._on_batch = on_batch
        self.healthy = True
        self.stalls = 0
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result], float]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.items_run = 0

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue one item; the returned future resolves with its result (or the batch's error)."""
        self.start()
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, time.perf_counter()))
        return future

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result], float]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _set_health(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if self._on_health is not None:
            await self._on_health(healthy)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut, _ in batch if not fut.cancelled()]
            if not live:
                continue
            if self._on_batch is not None:
                started = time.perf_counter()
                self._on_batch(len(live), [started - t for _, fut, t in batch
                                           if not fut.cancelled()])
            call = asyncio.ensure_future(  # noqa: RUF006 - kept in `call` and awaited below
                asyncio.to_thread(self._run_batch, [item for item, _ in live]))
            try:
                if self.deadline_s > 0:
                    results: Any = await asyncio.wait_for(asyncio.shield(call), self.deadline_s)
                else:
                    results = await call
            except TimeoutError:
                if call.done() and not call.cancelled() and call.exception() is not None:
                    self._fail(live, call.exception())  # the batch's own TimeoutError
                    continue
                await self._stalled(live, call)
                continue
            except Exception as exc:  # the error belongs to every caller of this batch
                log.exception("batch.error", size=len(live))
                self._fail(live, exc)
                await self._set_health(True)
                continue
            self.batches_run += 1
            self.items_run += len(live)
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
            await self._set_health(True)

    def _fail(self, live: list[tuple[Item, asyncio.Future[Result]]], exc: BaseException) -> None:
        for _, fut in live:
            if not fut.done():
                fut.set_exception(exc)

    async def _stalled(self, live: list[tuple[Item, asyncio.Future[Result]]],
                       call: asyncio.Future[Any]) -> None:
        """Fail the batch's items now, report unhealthy, and wait for the stuck call."""
        self.stalls += 1
        log.error("batch.stalled", size=len(live), deadline_s=self.deadline_s)
        self._fail(live, self._stall_error(len(live), self.deadline_s))
        await self._set_health(False)
        started = time.perf_counter()
        with contextlib.suppress(Exception):
            await call
        log.warning("batch.stall_ended", seconds=round(time.perf_counter() - started, 2))
        await self._set_health(True)
