"""The process stack the fault modules share: every service a real process on 127.0.0.1, two
renderer replicas and a heavy avatar. Each module registers `faults` (the stack, started once
for the module) and `up`: a test that kills or stops a process leaves it down and `up` starts
it again on the same port for the next test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2
from tests.support.audio import tone_pcm
from tests.support.avatars import make_avatar
from tests.support.faults import sees, warm_renderer
from tests.support.processes import (
    AVATAR,
    BACKENDS,
    EdgeProcess,
    ProcessStack,
    ServiceProcess,
    wait_until,
)

# An avatar whose JPEG frames weigh what a real 1080p avatar's do (~240 KB), so a stalled
# client fills the socket buffers within a few frames and backpressure shows within seconds.
HEAVY = "heavy"


def make_heavy_avatar(store: Path) -> None:
    path = make_avatar(store, HEAVY, num_frames=4, width=1280, height=720)
    frames = np.load(path / "frames.npy").astype(np.int16)
    grain = np.random.default_rng(1).integers(-20, 21, frames.shape)
    np.save(path / "frames.npy", np.clip(frames + grain, 0, 255).astype(np.uint8))


@dataclass
class Faults:
    stack: ProcessStack
    edge: EdgeProcess  # renderer target: replica 0 only
    pair: EdgeProcess  # renderer target: replicas 0 and 1
    warm: set[int] = field(default_factory=set)  # pids of renderers with the model loaded


def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    stack = ProcessStack(tmp_path_factory.mktemp("faults"), renderers=2,
                         SERVER__DRAIN_GRACE_S="30")
    make_heavy_avatar(stack.root / "avatars")
    with stack.running():
        edge = stack.add_edge([stack.renderers[0]], label="edge")
        pair = stack.add_edge(stack.renderers, label="edge_pair")
        for proc in stack.processes:
            proc.start()
        for proc in stack.processes:
            proc.wait_ready()
        yield Faults(stack, edge, pair)


def ensure(faults: Faults, procs: list[ServiceProcess], edge: EdgeProcess,
           services: tuple[str, ...] = BACKENDS) -> None:
    """Start again (at once, on their ports) those of `procs` an earlier test killed or
    stopped, warm any new renderer, and wait until `edge` sees `services` ok."""
    down = [proc for proc in procs if not proc.running]
    for proc in down:
        proc.start()
    for proc in down:
        proc.wait_ready()
    for proc in procs:
        if proc in faults.stack.renderers and proc.pid not in faults.warm:
            warm_renderer(proc)
            faults.warm.add(proc.pid)
    wait_until(lambda: sees(edge, services), 15, f"{edge.label} to see {services}")


def up(faults: Faults) -> Faults:
    """The backends and the edge with one renderer replica serving."""
    backends = faults.stack.backends
    ensure(faults, [*(backends[name] for name in BACKENDS), faults.edge], faults.edge)
    return faults


def animate(edge: EdgeProcess, service: str) -> grpc.RpcError | None:
    """A short Avatar.Animate call (text for tts, else audio); its error, if any."""
    first = avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(avatar=AVATAR))
    if service == "tts":
        rest = [avatar_pb2.AnimateRequest(text=b"Hello there.")]
    else:
        pcm = tone_pcm(0.4)
        rest = [avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(
            pcm=pcm[i : i + 3200], sample_rate=16000, start_sample=i // 2))
            for i in range(0, len(pcm), 3200)]
    with grpc.insecure_channel(edge.grpc_address) as channel:
        try:
            frames = list(avatar_pb2_grpc.AvatarStub(channel).Animate(iter([first, *rest]),
                                                                      timeout=30))
        except grpc.RpcError as err:
            return err
    assert frames
    return None


def register() -> tuple[object, object]:
    """`faults` and `up` as fixtures of a test module (assign the result there: pytest
    collects fixtures from the module's names)."""
    return (pytest.fixture(faults, scope="module", name="faults"),
            pytest.fixture(up, name="up"))
