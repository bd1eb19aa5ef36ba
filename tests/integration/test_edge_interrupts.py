"""Barge-in, cancel and client disconnects on the edge, against a real stack on 127.0.0.1:
whatever ends a stream early ends every upstream stream with it."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import frames_of, stream_in_background
from tests.support.stack import Edge, Stack


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge()


def test_new_utterance_on_a_session_interrupts_the_current_one(edge: Edge,
                                                               client: httpx.Client) -> None:
    """Barge-in: the page keeps its session id; a new request on it stops the old stream."""
    body = wav_bytes(tone_pcm(4.0))
    thread, first = stream_in_background(edge, {"format": "av"}, body)
    assert first["status"] == 200
    second = client.get("/generate", params={"text": "Stop. New words.", "format": "av",
                                             "session_id": first["session"]})
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert first["messages"][-1][0]["status"] == "interrupted"
    assert second.headers["x-session-id"] == first["session"]
    assert frames_of(second.content)[2]["status"] == "complete"


def test_cancel_endpoint_stops_the_stream(edge: Edge, client: httpx.Client) -> None:
    thread, first = stream_in_background(edge, {"format": "av"}, wav_bytes(tone_pcm(4.0)))
    reply = client.post(f"/sessions/{first['session']}/cancel")
    assert reply.json() == {"session_id": first["session"], "cancelled": True}
    thread.join(timeout=10)
    end = first["messages"][-1][0]
    assert end["type"] == "end" and end["status"] == "cancelled"
    assert end["frames"] < 100
    assert client.post(f"/sessions/{first['session']}/cancel").json()["cancelled"] is False
    assert client.post(f"/sessions/{'f' * 32}/cancel").status_code == 404


def test_client_disconnect_cancels_every_upstream_stream_within_a_second(
    stack: Stack, edge: Edge
) -> None:
    with edge.client() as c:
        request = c.build_request("GET", "/generate", params={
            "text": "This sentence is long enough to keep the renderer busy for a few seconds. "
                    "And here is another one to be sure."})
        reply = c.send(request, stream=True)
        assert reply.status_code == 200
        received = 0
        for chunk in reply.iter_bytes():
            received += chunk.count(b"--frame\r\n")
            if received >= 5:
                break
        assert stack.inflight()["renderer"] == 1
        reply.close()
        closed = time.monotonic()
    while any(stack.inflight().values()) and time.monotonic() - closed < 1.0:
        time.sleep(0.01)
    assert stack.inflight() == {"tts": 0, "audio_features": 0, "renderer": 0}
    assert time.monotonic() - closed < 1.0
