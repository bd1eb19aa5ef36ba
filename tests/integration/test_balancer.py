"""RendererPool (services/edge/balancer.py) against two real gRPC servers: new streams go to
the replica with the fewest open streams, not the next in turn, and a replica that leaves
the name keeps its open stream but gets no new one. The servers' Renderer is a stand-in that
counts its open streams (this tests the pool alone; tests/integration/test_replicas.py runs the real
stack)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from services.edge.balancer import RendererPool
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2, renderer_pb2_grpc
from synctalk.rpc.server import GrpcServer


class CountingRenderer(renderer_pb2_grpc.RendererServicer):
    def __init__(self) -> None:
        self.open = 0

    async def Render(self, request_iterator: AsyncIterator[renderer_pb2.RenderRequest],  # noqa: N802
                     context: grpc.aio.ServicerContext) -> AsyncIterator[renderer_pb2.VideoFrame]:
        self.open += 1
        try:
            async for _ in request_iterator:
                pass
        finally:
            self.open -= 1
        for _ in ():
            yield renderer_pb2.VideoFrame()


async def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def finish(call: grpc.aio.StreamStreamCall) -> None:
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def scenario() -> None:
    renderers = [CountingRenderer(), CountingRenderer()]
    servers = [GrpcServer(["lipsync.v1.Renderer"],
                          lambda s, r=r: renderer_pb2_grpc.add_RendererServicer_to_server(r, s))
               for r in renderers]
    for server in servers:
        await server.start()
    target = "ipv4:" + ",".join(s.address for s in servers)
    shared = dial(target)
    pool = RendererPool(target, 8 * 1024 * 1024, shared)
    first, second = renderers

    async def open_stream() -> grpc.aio.StreamStreamCall:
        call = pool.Render()
        await call.write(renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig()))
        return call

    try:
        a = await open_stream()
        b = await open_stream()
        await until(lambda: first.open == 1 and second.open == 1, "one stream on each")
        on_second = b if pool.active_streams()[f"ipv4:{servers[1].address}"] else a
        await finish(on_second)
        await until(lambda: second.open == 0 or first.open == 0, "a stream to end")
        emptied = first if first.open == 0 else second
        # Round robin would now go back to the first replica; the pool goes where no stream is.
        c = await open_stream()
        await until(lambda: emptied.open == 1, "the new stream on the idle replica")
        assert first.open == 1 and second.open == 1

        # The replica holding c leaves the name: c runs on, new streams go elsewhere.
        leaving = servers[renderers.index(emptied)].address
        staying = next(s.address for s in servers if s.address != leaving)
        pool._update((f"ipv4:{staying}",))
        assert pool.addresses == [f"ipv4:{staying}"]
        d = await open_stream()
        await until(lambda: (first.open, second.open).count(2) == 1, "d beside the other")
        assert emptied.open == 1  # c still open on the replica that left
        for call in (c, d, a if on_second is b else b):
            await finish(call)
        await until(lambda: f"ipv4:{leaving}" not in pool.active_streams(), "its channel closed")
    finally:
        await pool.close()
        await shared.close()
        for server in servers:
            await server.drain_and_stop()


def test_streams_go_to_the_least_loaded_replica() -> None:
    asyncio.run(scenario())
