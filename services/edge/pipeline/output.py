"""The frames an utterance hands its consumer, in order, ended by the end of stream or by
the exception the utterance's outcome reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.edge.pipeline.frames import Frame

OUT_QUEUE_FRAMES = 32  # frames buffered between the renderer stream and the consumer


class _End:
    pass


_END = _End()


class FrameOutput:
    """A bounded queue of frames; a full queue holds the renderer stage back (back-pressure)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Frame | BaseException | _End] = asyncio.Queue(OUT_QUEUE_FRAMES)

    async def push(self, frame: Frame) -> None:
        await self._queue.put(frame)

    async def end(self) -> None:
        await self._queue.put(_END)

    def replace(self, error: BaseException) -> None:
        """Drop what the consumer has not read yet; it gets `error` next."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(error)

    async def frames(self) -> AsyncIterator[Frame]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
