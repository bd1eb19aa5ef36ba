"""The bad-input catalogue (docs/security.md), text: empty, huge, control-only, NUL, escapes
and right-to-left script, over HTTP and to the TTS service, on a real stack on 127.0.0.1.
After each refusal the edge must still serve, hold no session or downstream stream, and have
left no temporary file (named or open) behind."""

from __future__ import annotations

import contextlib
import io
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from synctalk.rpc.gen.lipsync.v1 import (
    tts_pb2,
    tts_pb2_grpc,
)
from tests.support import bad_input
from tests.support.http import assert_clean_error, frames_of
from tests.support.raw_http import address, read_reply, status_of
from tests.support.stack import Edge, Stack

private_tmp, edge, clean = bad_input.register()


@pytest.mark.parametrize("text,status,needle", [
    pytest.param("", 422, "text", id="empty"),
    pytest.param("a" * 10**6, 422, "1000000 characters", id="1e6 chars"),
    pytest.param("\x01\x02\x03\x1b\u202e\u200b", 422, "no text to speak", id="only controls"),
])
def test_text_refused(client: httpx.Client, clean: None, text: str, status: int,
                      needle: str) -> None:
    reply = client.post("/generate", json={"text": text}, params={"realtime": "false"})
    assert_clean_error(reply, status, needle)


@pytest.mark.parametrize("length,status", [(10**4, 422), (10**6, 400)])
def test_long_text_in_the_query_is_refused(edge: Edge, clean: None, length: int,
                                           status: int) -> None:
    """10^4 characters reach the text check (422); a 1 MB request line is refused by the
    HTTP parser before the app (uvicorn: "Invalid HTTP request received", 400)."""
    with socket.create_connection(address(edge), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /generate?text=" + b"a" * length + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = read_reply(sock, b"", time.monotonic() + 10)
    assert status_of(reply) == status, reply[:300]
    assert b"Traceback" not in reply


@pytest.mark.parametrize("text", [
    pytest.param("Hello\x00 world, \x1b[31mred\x1b[0m and a bell\x07.",  # NUL crashed piper
                 id="NUL and escapes"),
    pytest.param("\u202eHello there.\u202c Hebrew: \u05e9\u05dc\u05d5\u05dd. "
                 "Arabic: \u0645\u0631\u062d\u0628\u0627.", id="RTL and bidi override"),
])
def test_control_and_rtl_text_is_spoken(client: httpx.Client, clean: None, text: str) -> None:
    """Controls become spaces, bidi format characters are dropped, RTL script is spoken."""
    reply = client.get("/get-tts-audio", params={"text": text})
    assert reply.status_code == 200, reply.text
    audio, rate = sf.read(io.BytesIO(reply.content), dtype="int16")
    assert rate == 16000 and len(audio) > 8000 and np.abs(audio).max() > 1000
    stream = client.get("/generate", params={"text": text, "format": "av", "realtime": "false"})
    assert frames_of(stream.content)[2]["status"] == "complete"


def test_tts_service_survives_nul_and_controls(stack: Stack) -> None:
    with grpc.insecure_channel(stack.tts.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        requests = [tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig()),
                    tts_pb2.SynthesizeRequest(text=b"Hi\x00 the\x1bre.")]
        chunks = list(stub.Synthesize(iter(requests), timeout=30))
        assert [c.text for c in chunks if c.end_of_sentence] == ["Hi  the re."]
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Synthesize(iter([requests[0], tts_pb2.SynthesizeRequest(
                text=b"\x00\x01\xe2\x80\xae")]), timeout=30))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no text to speak" in caught.value.details()
