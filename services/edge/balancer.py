"""Renderer streams spread by load: one channel per renderer replica, each new Render stream
to the replica with the fewest of this edge's streams open.

gRPC's round_robin spreads *calls*, blind to how long each lasts: a replica that joined
late, or one whose sessions ended early, stays under-used while others carry long streams.
Here the renderer target is resolved by the edge itself (`synctalk.rpc.resolve`) every
`REFRESH_S`: a replica that joins gets a channel and, having no streams, the next sessions;
one that leaves the name gets no new stream and its channel closes when its last stream
ends (a replica that dies ends only its own streams). Connected replicas are preferred to
ones still connecting or failing, so a dead replica gets nothing even before its name goes.
Targets the edge cannot resolve itself (`unix:`) and the unary calls use the shared
round_robin channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from synctalk.config import TransportConfig
from synctalk.log import get_logger
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2_grpc
from synctalk.rpc.resolve import Target, parse_target, resolve

REFRESH_S = 2.0
# Preference by channel state: connected first, then about to be, failing last.
_STATE_RANK = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.IDLE: 1,
    grpc.ChannelConnectivity.CONNECTING: 1,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: 2,
    grpc.ChannelConnectivity.SHUTDOWN: 3,
}

log = get_logger("services.edge.balancer")


@dataclass
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: renderer_pb2_grpc.RendererStub = field(init=False)
    active: int = 0  # Render streams of this edge open on it
    retired: bool = False  # gone from the name: no new streams, closed once idle

    def __post_init__(self) -> None:
        self.stub = renderer_pb2_grpc.RendererStub(self.channel)

    def state(self) -> grpc.ChannelConnectivity:
        return self.channel.get_state(try_to_connect=True)


class RendererPool:
    """A Renderer stub whose `Render` picks the least-loaded replica (see the module doc)."""

    def __init__(self, target: str, max_message_bytes: int, shared: grpc.aio.Channel, *,
                 transport: TransportConfig | None = None, refresh_s: float = REFRESH_S) -> None:
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.transport = transport
        self.refresh_s = refresh_s
        self.shared = renderer_pb2_grpc.RendererStub(shared)
        self.ListAvatars = self.shared.ListAvatars
        self.GetAvatar = self.shared.GetAvatar
        self.IdleLoop = self.shared.IdleLoop
        self.replicas: dict[str, Replica] = {}
        self._spec: Target | None = parse_target(target)
        self._refresher: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()  # held so they are not collected
        self._turn = 0
        if self._spec is not None and not self._spec.dynamic:
            self._update(self._spec.addresses)
        with contextlib.suppress(RuntimeError):  # no loop yet: started by the first stream
            asyncio.get_running_loop()
            self._start_refresher()

    @property
    def addresses(self) -> list[str]:
        """The replicas new streams may go to."""
        return [r.address for r in self.replicas.values() if not r.retired]

    def active_streams(self) -> dict[str, int]:
        return {r.address: r.active for r in self.replicas.values()}

    def Render(self, *args: Any, **kwargs: Any) -> grpc.aio.StreamStreamCall:  # noqa: N802
        replica = self.pick()
        if replica is None:
            return self.shared.Render(*args, **kwargs)
        call = replica.stub.Render(*args, **kwargs)
        replica.active += 1
        call.add_done_callback(lambda _call: self._release(replica))
        return call

    def pick(self) -> Replica | None:
        """The replica for a new stream: best channel state, then fewest streams, then the
        one whose turn it is (so idle replicas share new streams evenly)."""
        self._start_refresher()
        live = [r for r in self.replicas.values() if not r.retired]
        if not live:
            return None
        turn, self._turn = self._turn, self._turn + 1
        ranked = [(_STATE_RANK[r.state()], r.active, (i - turn) % len(live), r)
                  for i, r in enumerate(live)]
        return min(ranked, key=lambda item: item[:3])[3]

    def _release(self, replica: Replica) -> None:
        replica.active -= 1
        if replica.retired and replica.active == 0:
            self._close(replica)

    def _update(self, addresses: tuple[str, ...]) -> None:
        """Make the replica set `addresses`: new ones get a channel, gone ones retire."""
        if not addresses:  # an empty answer is more likely a DNS hiccup than zero replicas
            return
        for address in addresses:
            replica = self.replicas.get(address)
            if replica is None:
                replica = self.replicas[address] = Replica(
                    address, dial(address, self.max_message_bytes, self.transport))
                replica.state()  # start connecting now, not on the first stream
                log.info("renderer.replica_joined", address=address, target=self.target)
            replica.retired = False
        for replica in list(self.replicas.values()):
            if replica.address not in addresses and not replica.retired:
                replica.retired = True
                log.info("renderer.replica_left", address=replica.address,
                         active_streams=replica.active)
                if replica.active == 0:
                    self._close(replica)

    def _close(self, replica: Replica) -> None:
        if self.replicas.get(replica.address) is replica:
            del self.replicas[replica.address]
        task = asyncio.get_running_loop().create_task(replica.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _start_refresher(self) -> None:
        if self._refresher is None and self._spec is not None and self._spec.dynamic:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def refresh(self) -> None:
        """Resolve the target once and update the replica set (errors logged, set kept)."""
        if self._spec is None or not self._spec.dynamic:
            return
        try:
            addresses = await resolve(self._spec)
        except (OSError, TimeoutError) as err:
            log.warning("renderer.resolve_failed", target=self.target, error=str(err))
            return
        self._update(addresses)

    async def _refresh_loop(self) -> None:
        while True:
            started = time.monotonic()
            await self.refresh()
            await asyncio.sleep(max(0.0, self.refresh_s - (time.monotonic() - started)))

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await asyncio.gather(*(r.channel.close() for r in self.replicas.values()))
        self.replicas.clear()
