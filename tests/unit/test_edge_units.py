"""Single-class unit tests of the edge's pure parts: the sound-stream framing (incremental
reader), MJPEG parts, the PCM timeline's frame slices, and the session cap and barge-in."""

from __future__ import annotations

import pytest

from services.edge import mjpeg, stream_format
from services.edge.errors import EdgeError
from services.edge.orchestrator import PcmTimeline
from services.edge.sessions import SessionManager


def test_stream_reader_parses_any_split_of_the_bytes() -> None:
    body = (stream_format.message({"type": "start", "n": 1})
            + stream_format.message({"type": "frame", "index": 0}, b"\xff\xd8jpeg" + b"\0" * 1280)
            + stream_format.message({"type": "end", "status": "complete"}))
    reader = stream_format.Reader()
    messages = [m for i in range(len(body)) for m in reader.feed(body[i : i + 1])]
    assert messages == stream_format.parse(body)
    assert [h["type"] for h, _ in messages] == ["start", "frame", "end"]
    assert messages[1][1] == b"\xff\xd8jpeg" + b"\0" * 1280 and messages[0][1] == b""


def test_mjpeg_parts_round_trip() -> None:
    images = [b"\xff\xd8one\r\n--frame\r\n", b"\xff\xd8two"]  # boundary-like bytes inside
    body = b"".join(mjpeg.part(i) for i in images)
    assert body.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 16\r\n\r\n")
    assert mjpeg.split(body) == images


def test_timeline_gives_each_frame_its_640_samples_zero_padded_at_the_end() -> None:
    timeline = PcmTimeline()
    pcm = bytes(range(256)) * 10  # 2560 bytes = 1280 samples = 2 frames
    timeline.append(pcm[:1000])
    timeline.append(pcm[1000:] + b"\x01\x02")
    assert timeline.samples == 1281
    assert timeline.take(0) == pcm[:1280]
    assert timeline.take(1) == pcm[1280:]
    assert timeline.take(2) == b"\x01\x02" + b"\0" * 1278


class _Utterance:
    """Stands in for an Utterance in the SessionManager's bookkeeping (cancel + active)."""

    def __init__(self) -> None:
        self.cancelled: str | None = None

    @property
    def active(self) -> bool:
        return self.cancelled is None

    def cancel(self, reason: str) -> None:
        self.cancelled = reason


def test_session_cap_and_barge_in() -> None:
    sessions = SessionManager(max_active=1)
    first = sessions.create("http")
    a = _Utterance()
    sessions.begin(first, a)  # type: ignore[arg-type]
    second = sessions.create("http")
    with pytest.raises(EdgeError) as refused:
        sessions.begin(second, _Utterance())  # type: ignore[arg-type]
    assert refused.value.http_status == 503 and refused.value.headers == {"Retry-After": "2"}
    b = _Utterance()
    sessions.begin(first, b)  # type: ignore[arg-type]  # same session: interrupts, no new slot
    assert a.cancelled == "interrupted" and sessions.active == 1
    sessions.finish(first, a)  # type: ignore[arg-type]  # the old one ending frees nothing
    assert sessions.active == 1
    sessions.finish(first, b)  # type: ignore[arg-type]
    assert sessions.active == 0
    sessions.begin(second, _Utterance())  # type: ignore[arg-type]
    assert sessions.get(first.id) is first
    with pytest.raises(EdgeError):
        sessions.get("../../etc/passwd")
    with pytest.raises(EdgeError):
        sessions.get(first.id, kind="grpc")


class _Modes:
    """AudioFeatures.ListModes of a server with the given look-ahead table for mode ave."""

    def __init__(self, trimmed: list[int]) -> None:
        self.trimmed = trimmed

    async def ListModes(self, request, **call_options):  # noqa: N802 - the gRPC method name
        from synctalk.rpc.gen.lipsync.v1 import audio_features_pb2

        mode = audio_features_pb2.FeatureMode(name="ave", lookahead_frames=11,
                                              trimmed_lookahead_frames=self.trimmed)
        return audio_features_pb2.ListModesResponse(modes=[mode])


@pytest.mark.parametrize("table,asked,granted", [
    ([11, 10, 9, 8], 3, (3, 8)),
    ([11, 10, 9, 8], 7, (3, 8)),  # the server grants at most its largest trim
    ([11, 10, 9, 8], 0, (0, 11)),
    ([], 3, (0, 11)),  # a server that knows no trim grants none
])
def test_the_edge_uses_the_trim_the_feature_service_grants(table, asked, granted) -> None:
    import asyncio

    from services.edge.clients import Downstream
    from synctalk.config import load_settings

    settings = load_settings()

    async def main():
        downstream = Downstream(settings.services, settings.server, default_avatar="demo",
                                feature_mode="ave")
        downstream.features = _Modes(table)
        try:
            return await downstream.lookahead_frames("ave", asked)
        finally:
            await downstream.close()

    assert asyncio.run(main()) == granted
