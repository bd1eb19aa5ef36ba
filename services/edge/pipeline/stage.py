"""The one shape of every stage of the chain (pipecat's FrameProcessor: take a frame, process
it, push the result downstream), and the one pump that drives it.

A stage `receive`s the next message from upstream, `process`es it (which pushes whatever it
makes to the next stage) and, at end of stream, `close`s its downstream side. `pump` is the
only loop: it handles the end of stream and turns every error into the utterance's outcome,
charging a gRPC failure to the stage's service with its real status.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.edge.errors import EdgeError

END_OF_STREAM = grpc.aio.EOF  # what `receive` returns when upstream has nothing more


class Stage(ABC):
    """One link: upstream messages in, downstream messages out."""

    service: str  # the service a gRPC failure of this stage is charged to

    @abstractmethod
    async def receive(self) -> Any:
        """The next message from upstream, or END_OF_STREAM."""

    @abstractmethod
    async def process(self, message: Any) -> None:
        """Handle one message, pushing what it makes downstream."""

    @abstractmethod
    async def close(self) -> None:
        """Upstream ended: tell downstream no more is coming."""


async def pump(
    stage: Stage,
    fail: Callable[[EdgeError], None],
    explain: Callable[[str, grpc.aio.AioRpcError], Awaitable[EdgeError]],
) -> None:
    """Drive `stage` to the end of its stream; `fail` gets the first error, a gRPC one after
    `explain` has named the service at fault and found its real status."""
    try:
        while (message := await stage.receive()) is not END_OF_STREAM:
            await stage.process(message)
        await stage.close()
    except grpc.aio.AioRpcError as err:
        fail(await explain(stage.service, err))
    except EdgeError as err:
        fail(err)
