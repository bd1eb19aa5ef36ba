"""Property-based fuzzing (issue 20) of the edge's HTTP API: JSON bodies with non-finite numbers
and any code point, malformed query values and lying uploads never get a 500, and after each
one no session is held and the next request is served.

Each property either holds or the input is refused with the documented error, never
another exception and never a hang.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fuzz import FUZZ, LYING_WAVS

EDGE_FUZZ = settings(FUZZ, max_examples=8)
ANY_CHAR = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(ANY_CHAR, max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["text", "voice", "avatar", "enabled", "fps"])
                      | st.text(ANY_CHAR, max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def fuzz_edge(request: pytest.FixtureRequest):  # noqa: ANN201 (tests.support.stack.Edge)
    from tests.support.stack import shared_stack

    stack = shared_stack(request)
    return stack, stack.edge(max_sessions=2, max_upload_seconds=5.0, max_stream_seconds=10.0,
                             debug={"endpoints": True})


def after_bad_request(fuzz_edge) -> None:  # noqa: ANN001
    """Active sessions back to 0 and the next valid request succeeds."""
    from tests.support.audio import tone_pcm, wav_bytes
    from tests.support.http import frames_of, upload

    stack, edge = fuzz_edge
    deadline = time.monotonic() + 5
    while edge.server.runtime.sessions.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert edge.server.runtime.sessions.active == 0
    with edge.client() as c:
        reply = upload(c, wav_bytes(tone_pcm(0.12)), format="av")
        assert reply.status_code == 200 and frames_of(reply.content)[2]["status"] == "complete"
    assert edge.server.runtime.sessions.active == 0


def assert_renders(reply) -> None:  # noqa: ANN001
    assert reply.status_code < 500, reply.text[:300]
    if reply.status_code >= 400:
        assert isinstance(reply.json()["detail"], str | list)
        assert "Traceback" not in reply.text


@EDGE_FUZZ
@given(body=JSON_VALUES, route=st.sampled_from(["/generate", "/debug/config",
                                                "/sessions/{sid}/stats"]))
def test_json_bodies_never_get_a_500(fuzz_edge, body: object, route: str) -> None:  # noqa: ANN001
    _, edge = fuzz_edge
    raw = json.dumps(body, allow_nan=True).encode()  # NaN, Infinity; surrogates as \ud800
    with edge.client() as c:
        path = route.format(sid=edge.server.runtime.sessions.create("http").id)
        reply = c.post(path, content=raw, params={"realtime": "false", "format": "av"},
                       headers={"Content-Type": "application/json"})
    assert_renders(reply)
    if reply.status_code == 422 and isinstance(reply.json()["detail"], list):
        text = json.dumps(reply.json())
        assert "NaN" not in text or "non-finite" in text
    after_bad_request(fuzz_edge)


@EDGE_FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["text", "voice", "avatar", "format", "realtime", "session_id",
                     "duration"]),
    st.binary(max_size=40) | st.sampled_from([b"nan", b"inf", b"-1e999", b"\xed\xa0\x80"]),
    max_size=4))
def test_query_values_never_get_a_500(fuzz_edge, params: dict[str, bytes]) -> None:  # noqa: ANN001
    from urllib.parse import quote_from_bytes

    _, edge = fuzz_edge
    query = "&".join(f"{k}={quote_from_bytes(v)}" for k, v in params.items())
    with edge.client() as c:
        for path in ("/generate", "/get-tts-audio", "/avatar"):
            assert_renders(c.get(f"{path}?{query}"))
    after_bad_request(fuzz_edge)


@EDGE_FUZZ
@given(LYING_WAVS)
def test_lying_uploads_leave_the_edge_serving(fuzz_edge, data: bytes) -> None:  # noqa: ANN001
    from tests.support.http import upload

    _, edge = fuzz_edge
    with edge.client() as c:
        reply = upload(c, data, format="av")
    assert reply.status_code in (200, 413, 422), reply.text[:300]
    assert_renders(reply)
    after_bad_request(fuzz_edge)
