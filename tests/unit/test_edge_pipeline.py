"""Unit tests of the utterance chain's two shared parts: the one stage pump (end of stream,
errors, gRPC failures charged to the stage's service) and the one place that decides how an
utterance ends (the first of finish, cancel and failure wins)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.edge.errors import EdgeError
from services.edge.pipeline.calls import LOCAL_FAILURE_DETAILS, StageCalls
from services.edge.pipeline.frames import Stats, UtteranceInterrupted
from services.edge.pipeline.outcome import Outcome
from services.edge.pipeline.output import FrameOutput
from services.edge.pipeline.stage import END_OF_STREAM, Stage, pump


class _ListStage(Stage):
    """Reads `messages` then ends; doubles each message downstream; may raise on one."""

    service = "features"

    def __init__(self, messages: list[Any], raise_on: Any = None,
                 error: BaseException | None = None) -> None:
        self.messages = list(messages)
        self.raise_on = raise_on
        self.error = error
        self.pushed: list[Any] = []
        self.closed = 0

    async def receive(self) -> Any:
        if not self.messages:
            return END_OF_STREAM
        message = self.messages.pop(0)
        if message == self.raise_on and self.error is not None:
            raise self.error
        return message

    async def process(self, message: Any) -> None:
        if message == self.raise_on and self.error is None:
            raise EdgeError(502, grpc.StatusCode.INTERNAL, f"bad {message}", service="renderer")
        self.pushed.append(message * 2)

    async def close(self) -> None:
        self.closed += 1


async def _explain(service: str, err: grpc.aio.AioRpcError) -> EdgeError:
    return EdgeError(503, err.code(), f"{service}: {err.details()}", service=service)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _run_pump(stage: Stage) -> list[EdgeError]:
    failures: list[EdgeError] = []
    asyncio.run(pump(stage, failures.append, _explain))
    return failures


def test_pump_pushes_every_message_then_closes_downstream_once() -> None:
    stage = _ListStage([1, 2, 3])
    assert _run_pump(stage) == []
    assert stage.pushed == [2, 4, 6] and stage.closed == 1


def test_pump_reports_a_stage_error_and_does_not_close() -> None:
    stage = _ListStage([1, 2, 3], raise_on=2)
    failures = _run_pump(stage)
    assert [f.message for f in failures] == ["bad 2"] and failures[0].service == "renderer"
    assert stage.pushed == [2] and stage.closed == 0


def test_pump_charges_a_grpc_failure_to_the_stage_service() -> None:
    stage = _ListStage([1, 2], raise_on=2,
                       error=_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    failures = _run_pump(stage)
    assert len(failures) == 1
    assert failures[0].service == "features" and failures[0].code == grpc.StatusCode.UNAVAILABLE
    assert failures[0].message == "features: connection reset" and stage.closed == 0


def test_pump_lets_cancellation_through() -> None:
    async def main() -> None:
        class _Blocked(_ListStage):
            async def receive(self) -> Any:
                await asyncio.Event().wait()

        task = asyncio.get_running_loop().create_task(pump(_Blocked([]), _fail_test, _explain))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def _fail_test(err: EdgeError) -> None:
    raise AssertionError(f"unexpected failure {err}")


class _Ending:
    """An Outcome with what it reported and how often it stopped the utterance."""

    def __init__(self) -> None:
        self.reported: list[BaseException] = []
        self.stops = 0
        self.outcome = Outcome("s1", Stats(), report=self.reported.append, stop=self._stop)

    def _stop(self) -> None:
        self.stops += 1


def _error(service: str) -> EdgeError:
    return EdgeError(503, grpc.StatusCode.UNAVAILABLE, f"{service} service unavailable",
                     service=service)


def test_the_first_failure_wins_and_every_failure_stops_everything() -> None:
    ending = _Ending()
    first, second = _error("renderer"), _error("tts")
    ending.outcome.fail(first)
    ending.outcome.fail(second)
    ending.outcome.cancel("client gone")
    assert ending.reported == [first]
    assert ending.outcome.failure is first and ending.outcome.interrupted is None
    assert not ending.outcome.active and ending.stops == 3


def test_a_cancel_first_hides_later_failures() -> None:
    ending = _Ending()
    ending.outcome.cancel("barge-in")
    ending.outcome.fail(_error("features"))
    assert len(ending.reported) == 1
    assert isinstance(ending.reported[0], UtteranceInterrupted)
    assert ending.reported[0].reason == "barge-in"
    assert ending.outcome.interrupted == "barge-in" and ending.outcome.failure is None
    assert ending.stops == 2


def test_a_cancel_after_the_last_frame_reports_nothing() -> None:
    ending = _Ending()
    assert ending.outcome.active
    ending.outcome.finish()
    ending.outcome.cancel("client gone")
    assert ending.reported == [] and ending.outcome.interrupted is None
    assert not ending.outcome.active and ending.stops == 1


def test_a_reported_ending_replaces_the_frames_not_yet_read() -> None:
    async def main() -> list[Any]:
        output = FrameOutput()
        await output.push("frame 0")  # type: ignore[arg-type]
        await output.push("frame 1")  # type: ignore[arg-type]
        output.replace(UtteranceInterrupted("cancelled"))
        seen: list[Any] = []
        with pytest.raises(UtteranceInterrupted):
            async for frame in output.frames():
                seen.append(frame)
        return seen

    assert asyncio.run(main()) == []


class _BrokenCall:
    """A call whose status grpc.aio reports late: first the local INTERNAL, then the real."""

    def __init__(self) -> None:
        self.asked = 0

    async def details(self) -> str:
        self.asked += 1
        return LOCAL_FAILURE_DETAILS if self.asked < 3 else "Socket closed"

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


def test_a_stream_broken_under_a_write_reports_its_real_status() -> None:
    calls = StageCalls(_Ending().outcome)
    calls.calls["renderer"] = _BrokenCall()  # type: ignore[assignment]
    err = asyncio.run(calls.rpc_error(
        "renderer", _rpc_error(grpc.StatusCode.INTERNAL, LOCAL_FAILURE_DETAILS)))
    assert err.code == grpc.StatusCode.UNAVAILABLE and err.http_status == 503
    assert err.service == "renderer"


class _OverwrittenCall:
    """A call whose real status arrives first and is then overwritten for good by the local
    INTERNAL of a write that failed after it, as grpc.aio's `set_internal_error` does."""

    def __init__(self) -> None:
        self.status = (grpc.StatusCode.OK, "")
        self.callbacks: list[Any] = []

    def add_done_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        for callback in self.callbacks:
            callback(self)

    async def code(self) -> grpc.StatusCode:
        return self.status[0]

    async def details(self) -> str:
        return self.status[1]


def test_a_real_status_overwritten_by_the_local_internal_is_still_reported() -> None:
    calls = StageCalls(_Ending().outcome)
    call = _OverwrittenCall()
    calls.calls["renderer"] = call  # type: ignore[assignment]
    calls.watch("renderer", call)  # type: ignore[arg-type]
    call.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, "renderer out of GPU memory, retry")
    call.finish(grpc.StatusCode.INTERNAL, LOCAL_FAILURE_DETAILS)
    err = asyncio.run(calls.rpc_error(
        "renderer", _rpc_error(grpc.StatusCode.INTERNAL, LOCAL_FAILURE_DETAILS)))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.http_status == 503
    assert "out of GPU memory" in err.message
