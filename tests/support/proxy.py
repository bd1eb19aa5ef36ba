"""A TCP proxy for network-fault tests: put it between the edge and a backend, then add delay,
cap the bandwidth, or blackhole the link, while both ends keep their connection open.

A blackhole forwards nothing in either direction but keeps reading, so neither end sees a
reset or a full socket; when it heals, what was held is delivered in order, as TCP would after
retransmitting across a healed partition. It runs on its own thread and event loop, so a
synchronous test drives it with plain method calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 64 * 1024


@dataclass
class LinkFaults:
    delay_s: float = 0.0  # added to every byte, each way
    rate_bytes_s: float = 0.0  # bandwidth cap, each way; 0 = none
    blackhole: bool = False


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards each connection to `target` ("host:port")."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.faults = LinkFaults()
        self.port = 0
        self.connections = 0
        self._flowing: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def set(self, *, delay_s: float = 0.0, rate_bytes_s: float = 0.0,
            blackhole: bool = False) -> None:
        """Change the link's faults (all at once; omitted ones are cleared)."""
        def apply() -> None:
            self.faults = LinkFaults(delay_s, rate_bytes_s, blackhole)
            assert self._flowing is not None
            if blackhole:
                self._flowing.clear()
            else:
                self._flowing.set()
        self._loop.call_soon_threadsafe(apply)

    def heal(self) -> None:
        self.set()

    @contextlib.contextmanager
    def fault(self, **faults: float | bool) -> Iterator[FaultProxy]:
        """The link with `faults` inside the block, healed on leaving it."""
        self.set(**faults)  # type: ignore[arg-type]
        try:
            yield self
        finally:
            self.heal()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_w, server_w):
                writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read at once (so the sender never blocks), deliver under the faults."""
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            assert self._flowing is not None
            while True:
                arrived, data = await held.get()
                if not data:
                    writer.close()
                    return
                await self._flowing.wait()
                wait = arrived + self.faults.delay_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                if self.faults.rate_bytes_s > 0:
                    await asyncio.sleep(len(data) / self.faults.rate_bytes_s)

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                held.put_nowait((time.monotonic(), data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
