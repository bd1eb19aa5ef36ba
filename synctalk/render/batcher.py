"""Micro-batching of U-Net work across frames and concurrent streams.

Streams submit single items and await their results; a worker collects items up to
`max_batch` or until `max_wait_ms` has passed since the first one, runs the batch in a
thread (the model call releases the GIL), and resolves each item's future. Each stream
awaits its own futures in submission order, so per-stream order is kept by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
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
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue()
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
        self._queue.put_nowait((item, future))
        return future

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
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

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                results: Any = await asyncio.to_thread(self._run_batch, [item for item, _ in live])
            except Exception as exc:  # the error belongs to every caller of this batch
                log.exception("batch.error", size=len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_run += len(live)
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
