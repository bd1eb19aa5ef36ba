"""The utterance's downstream gRPC streams: writing, reading and closing them with errors
turned into the failing service's real status, and the per-stage bookkeeping (who owes an
answer, who is being waited on) that the stall watchdog reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc

from services.edge.clients import FEATURES, RENDERER, TTS, Downstream
from services.edge.errors import EdgeError, from_rpc
from services.edge.pipeline.frames import UtteranceConfig
from services.edge.pipeline.outcome import Outcome
from synctalk.rpc.server import SESSION_METADATA_KEY

FEATURE_MODE_METADATA_KEY = "x-feature-mode"
FEATURE_TRIM_METADATA_KEY = "x-feature-trim"
T = TypeVar("T")

# What grpc.aio reports, as an INTERNAL status, for a stream that broke under a write.
LOCAL_FAILURE_DETAILS = "Internal error from Core"
REAL_STATUS_WAIT_S = 1.0  # how long to wait for the real status to replace it


class StageCalls:
    """One bidirectional stream per downstream service, keyed by service name."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.calls: dict[str, grpc.aio.StreamStreamCall] = {}
        # Stall tracking per stage: since when it owes an answer, since when a pump waits in
        # its `read()`, whether it answered yet, whether the edge finished writing to it.
        self.owed_since: dict[str, float | None] = {}
        self.reading_since: dict[str, float | None] = {}
        self.answered: set[str] = set()
        self.writes_done: set[str] = set()
        # The first status each call finished with that is not grpc.aio's local INTERNAL.
        self.first_status: dict[str, _Status] = {}

    def open(self, downstream: Downstream, session_id: str, config: UtteranceConfig, *,
             text_input: bool) -> None:
        """Open the renderer's and AudioFeatures' streams, and TTS's for text input."""
        session = ((SESSION_METADATA_KEY, session_id),)
        timeout = config.stream_timeout_s
        self.calls[RENDERER] = downstream.renderer.Render(metadata=session, timeout=timeout)
        features = (*session, (FEATURE_MODE_METADATA_KEY, config.feature_mode))
        if config.feature_trim:
            features = (*features, (FEATURE_TRIM_METADATA_KEY, str(config.feature_trim)))
        self.calls[FEATURES] = downstream.features.Extract(metadata=features, timeout=timeout)
        if text_input:
            self.calls[TTS] = downstream.tts.Synthesize(metadata=session, timeout=timeout)
        for service, call in self.calls.items():
            self.watch(service, call)

    def watch(self, service: str, call: grpc.aio.Call) -> None:
        call.add_done_callback(lambda done: self._remember(service, done))

    def _remember(self, service: str, call: grpc.aio.Call) -> None:
        """Keep the call's status as it is set: a write that fails after the real status
        arrived overwrites it with the local INTERNAL for good."""
        if service in self.first_status:
            return
        code, details = _settled(call.code()), _settled(call.details())
        if code is not None and details is not None and details != LOCAL_FAILURE_DETAILS:
            self.first_status[service] = _Status(code, details)

    def cancel_all(self) -> None:
        for call in self.calls.values():
            call.cancel()

    def owe(self, service: str) -> None:
        """`service` was sent work (or its input was closed): an answer is now due."""
        if self.owed_since.get(service) is None:
            self.owed_since[service] = time.monotonic()

    async def read(self, service: str,
                   owes_more: Callable[[Any], bool] = lambda message: False) -> Any:
        """The next message of `service`'s stream, with the wait visible to the watchdog;
        `owes_more(message)` says whether the stage still owes answers besides this one."""
        self.reading_since[service] = time.monotonic()
        try:
            message = await self.calls[service].read()
        finally:
            self.reading_since[service] = None
        self.answered.add(service)
        still_owed = message is not grpc.aio.EOF and (
            service in self.writes_done or owes_more(message))
        self.owed_since[service] = time.monotonic() if still_owed else None
        return message

    def stalled_for(self, service: str, now: float) -> float:
        """How long `service` has owed an answer while the edge was waiting to read it."""
        owed, reading = self.owed_since.get(service), self.reading_since.get(service)
        if owed is None or reading is None:
            return 0.0
        return now - max(owed, reading)

    async def write(self, service: str, message: object) -> None:
        await self._checked(service, self.calls[service].write(message))

    async def done_writing(self, service: str) -> None:
        self.writes_done.add(service)
        self.owe(service)
        await self._checked(service, self.calls[service].done_writing())

    async def _checked(self, service: str, step: Awaitable[None]) -> None:
        """Await a write-side step of `service`'s call; its failure as the service's error."""
        try:
            await step
        except grpc.aio.AioRpcError as err:
            raise await self.rpc_error(service, err) from None
        except asyncio.InvalidStateError:
            raise await self._status_error(service) from None

    async def _status_error(self, service: str) -> EdgeError:
        """Why a call that refused a write has ended."""
        if self.outcome.failure is not None:
            return self.outcome.failure
        call = self.calls[service]
        return await self.rpc_error(service, _Status(await call.code(), await call.details()))

    async def rpc_error(self, service: str, err: grpc.RpcError) -> EdgeError:
        """The failure of the call to `service`, with its real status.

        When a stream breaks under a pending write (the service died), grpc.aio fails the
        write, and the read racing it, with INTERNAL "Internal error from Core" in place of
        the call's status (grpc/grpc#36066); the real one (UNAVAILABLE) replaces it moments
        later. Reported as is, a crashed renderer would read "renderer service failed
        (INTERNAL)" with a 502 instead of "renderer service unavailable" with a 503."""
        if err.code() != grpc.StatusCode.INTERNAL or err.details() != LOCAL_FAILURE_DETAILS:
            return from_rpc(service, err)
        call = self.calls[service]
        deadline = time.monotonic() + REAL_STATUS_WAIT_S
        while time.monotonic() < deadline:
            if service in self.first_status:
                return from_rpc(service, self.first_status[service])
            details = await call.details()
            if details != LOCAL_FAILURE_DETAILS:
                return from_rpc(service, _Status(await call.code(), details))
            await asyncio.sleep(0.01)
        return from_rpc(service, _Status(grpc.StatusCode.UNAVAILABLE, "the stream broke"))


def _settled(step: Coroutine[Any, Any, T]) -> T | None:
    """The value of a coroutine that finishes without waiting (a finished call's status,
    read from a synchronous done callback); None if it would have to wait."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    return None


class _Status(grpc.RpcError):
    """A finished call's status in the shape `from_rpc` reads."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details
