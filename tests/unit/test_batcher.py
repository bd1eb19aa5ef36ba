"""MicroBatcher: batching across concurrent submitters, order per stream, errors, cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from synctalk.render.batcher import MicroBatcher


def test_concurrent_streams_are_batched_and_keep_their_order() -> None:
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        return [(stream, i * 10) for stream, i in items]

    async def main():
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=20)

        async def stream(name: str) -> list[int]:
            futures = [batcher.submit((name, i)) for i in range(10)]
            out = []
            for fut in futures:
                got_stream, value = await fut
                assert got_stream == name
                out.append(value)
            return out

        a, b = await asyncio.gather(stream("a"), stream("b"))
        await batcher.close()
        return a, b, batcher

    a, b, batcher = asyncio.run(main())
    assert a == b == [i * 10 for i in range(10)]
    assert max(sizes) == 4 and sum(sizes) == 20
    assert batcher.batches_run == len(sizes) < 20


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    calls = {"n": 0}

    def run(items):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return list(items)

    async def main():
        batcher = MicroBatcher(run, max_batch=2, max_wait_ms=1)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 2
        await batcher.close()

    asyncio.run(main())


def test_cancelled_items_are_not_computed() -> None:
    seen: list[int] = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        seen.extend(items)
        return list(items)

    async def main():
        batcher = MicroBatcher(run, max_batch=1, max_wait_ms=0)
        first = batcher.submit(1)
        await asyncio.sleep(0.05)  # the worker is now blocked on item 1
        doomed = batcher.submit(2)
        doomed.cancel()
        gate.set()
        assert await first == 1
        assert await batcher.submit(3) == 3
        await batcher.close()

    asyncio.run(main())
    assert seen == [1, 3]


def test_a_batch_past_its_deadline_fails_its_items_and_reports_health() -> None:
    health: list[bool] = []
    sizes: list[tuple[int, int]] = []
    release = threading.Event()

    def run(items):
        if items[0] == "stuck":
            release.wait(5)
        return [f"{item}!" for item in items]

    async def on_health(ok: bool) -> None:
        health.append(ok)

    async def main():
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=1, deadline_s=0.1,
                               stall_error=lambda n, s: RuntimeError(f"stalled {n} {s}"),
                               on_health=on_health,
                               on_batch=lambda n, waits: sizes.append((n, len(waits))))
        stuck = [batcher.submit("stuck"), batcher.submit("also")]
        for fut in stuck:
            with pytest.raises(RuntimeError, match="stalled 2 0.1"):
                await fut
        assert health == [False] and not batcher.healthy
        later = batcher.submit("later")  # waits for the stuck call, then runs
        await asyncio.sleep(0.05)
        assert not later.done()
        release.set()
        assert await later == "later!"
        assert health == [False, True] and batcher.stalls == 1
        await batcher.close()

    asyncio.run(main())
    assert sizes == [(2, 2), (1, 1)]
