"""Animate requests and a live Animate call for the edge tests (a real gRPC client)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import grpc

from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2

STEP = 1280  # 40 ms of 16 kHz s16le


def config(**fields: object) -> avatar_pb2.AnimateRequest:
    return avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(**fields))


def audio_requests(pcm: bytes, step: int = STEP, rate: int = 0) -> list[avatar_pb2.AnimateRequest]:
    return [avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(
        pcm=pcm[i : i + step], sample_rate=rate, start_sample=i // 2))
        for i in range(0, len(pcm), step)]


def joined_audio(frames: list[avatar_pb2.AnimatedFrame]) -> bytes:
    return b"".join(f.audio for f in frames)


class LiveCall:
    """A bidirectional call fed from a queue, read on a thread (to interleave input/output)."""

    def __init__(self, stub: avatar_pb2_grpc.AvatarStub, first: avatar_pb2.AnimateRequest) -> None:
        self.inbox: queue.Queue[avatar_pb2.AnimateRequest | None] = queue.Queue()
        self.inbox.put(first)
        self.frames: list[avatar_pb2.AnimatedFrame] = []
        self.arrival: list[float] = []
        self.error: grpc.RpcError | None = None
        self.call = stub.Animate(iter(self.inbox.get, None), timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for frame in self.call:
                self.frames.append(frame)
                self.arrival.append(time.monotonic())
        except grpc.RpcError as err:
            self.error = err

    def send(self, *requests: avatar_pb2.AnimateRequest) -> None:
        for request in requests:
            self.inbox.put(request)

    def wait_frames(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        assert len(self.frames) >= n, (len(self.frames), self.error)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.01)
        assert condition(), (len(self.frames), self.error)

    def close(self, timeout: float = 20) -> None:
        self.inbox.put(None)
        self.thread.join(timeout)
        assert not self.thread.is_alive()
