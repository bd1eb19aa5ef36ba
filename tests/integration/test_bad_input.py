"""The bad-input catalogue (docs/security.md) where the other service tests leave gaps: lying,
broken and bomb-like audio files, odd but valid formats, multipart abuse, a slow-loris
upload, hostile text, path-like avatar names, over-size gRPC messages and streams that never
end, against a real stack on 127.0.0.1. After each refusal the edge must still serve, hold no
session or downstream stream, and have left no temporary file (named or open) behind."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import struct
import tempfile
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import av
import grpc
import httpx
import numpy as np
import pytest
import soundfile as sf

from synctalk.rpc.gen.lipsync.v1 import (
    avatar_pb2,
    avatar_pb2_grpc,
    common_pb2,
    renderer_pb2,
    renderer_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.http import assert_clean_error, frames_of, upload
from tests.support.stack import AVATAR, Edge, Stack

MAX_UPLOAD_BYTES = 2_000_000  # above the multipart parser's 1 MB spool: big parts hit disk
MAX_UPLOAD_SECONDS = 5.0
UPLOAD_TIMEOUT_S = 1.5
MAX_MESSAGE_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def private_tmp(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The in-process servers' temporary directory for this module, so leftovers are ours
    alone (other processes share the system one)."""
    path = tmp_path_factory.mktemp("spool")
    saved, tempfile.tempdir = tempfile.tempdir, str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved


@pytest.fixture(scope="module")
def edge(stack: Stack, private_tmp: Path) -> Edge:
    return stack.edge(max_upload_bytes=MAX_UPLOAD_BYTES, max_upload_seconds=MAX_UPLOAD_SECONDS,
                      upload_timeout_s=UPLOAD_TIMEOUT_S,
                      server={"max_message_bytes": MAX_MESSAGE_BYTES},
                      debug={"endpoints": True})


@pytest.fixture(scope="module")
def client(edge: Edge) -> Iterator[httpx.Client]:
    with edge.client() as c:
        yield c


def temp_fds(tmp: Path) -> list[str]:
    """This process's open files under `tmp` (spool files show as '... (deleted)')."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(tmp)):
                found.append(target)
    return found


def snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.exists() else set()


@contextlib.contextmanager
def leaves_nothing(stack: Stack, edge: Edge, tmp: Path) -> Iterator[None]:
    """After the block: no session or downstream stream running, no file added to the
    temporary or debug directories, no temporary file held open, and the edge healthy."""
    files, debug = snapshot(tmp), snapshot(stack.root / "debug")
    yield
    deadline = time.monotonic() + 5
    while (edge.server.runtime.sessions.active or any(stack.inflight().values())) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert edge.server.runtime.sessions.active == 0
    assert stack.inflight() == {"tts": 0, "audio_features": 0, "renderer": 0}
    assert snapshot(tmp) == files
    assert temp_fds(tmp) == []
    assert snapshot(stack.root / "debug") == debug
    with edge.client(timeout=10) as c:
        assert c.get("/health").json()["status"] == "ok"


@pytest.fixture
def clean(stack: Stack, edge: Edge, private_tmp: Path) -> Iterator[None]:
    with leaves_nothing(stack, edge, private_tmp):
        yield


# -- audio files -------------------------------------------------------------------------------


def wav_header(rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header, any field as given (wrapped to its width)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels & 0xFFFF, rate & 0xFFFFFFFF,
                      (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def sf_bytes(audio: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    out = io.BytesIO()
    sf.write(out, audio, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * 220 * t)
    return np.stack([mono, 0.5 * mono], 1)[:, :channels] if channels > 1 else mono


def eight_bit_wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(16000)
        w.writeframes((128 + 100 * tone(seconds, 16000)).astype(np.uint8).tobytes())
    return out.getvalue()


def mp4(seconds: float, audio: bool) -> bytes:
    """An H.264 video (with an AAC track when `audio`), as a phone might record it."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=48000, layout="mono") if audio else None
        for i in range(int(seconds * 25)):
            image = np.full((48, 64, 3), i * 8 % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(tone(seconds, 48000)[None].astype(np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate = 48000
            for packet in [*sound.encode(frame), *sound.encode(None)]:
                container.mux(packet)
    return out.getvalue()


def silent_flac(hours: float, rate: int = 1000) -> bytes:
    """Hours of digital silence: FLAC stores each block as one constant, ~35 kB for 3 h."""
    out = io.BytesIO()
    with sf.SoundFile(out, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(rate * 600, np.int16)
        for _ in range(int(hours * 6)):
            f.write(block)
    return out.getvalue()


def list_chunk_bomb() -> bytes:
    """A 32 KB WAV whose LIST/INFO tag claims 1 GB: FFmpeg used to allocate (and zero) it."""
    pcm = tone_pcm(1.0)[:30_000]
    body = (b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"LIST" + struct.pack("<I", 0xFFFFFFF0) + b"INFO"
            + b"INAM" + struct.pack("<I", 1_000_000_000) + b"x" * 100
            + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM_1S = tone_pcm(1.0)
WAV_1S = wav_bytes(PCM_1S)

# name -> (file bytes, expected status, detail needle or, for 200, the expected frame count)
UPLOADS: dict[str, tuple[bytes, int, str | int]] = {
    "truncated in the header": (WAV_1S[:30], 422, "cannot decode"),
    "truncated data (header claims more)": (WAV_1S[: 44 + 8000], 200, 7),
    "data size claims less than present": (wav_header(16000, 1, 16, 8000) + PCM_1S, 200, 7),
    "data size claims 4 GiB": (wav_header(16000, 1, 16, 0xFFFFFFFF) + PCM_1S, 200, 25),
    "garbage after RIFF header": (b"RIFF\x24\x00\x00\x00WAVE" + bytes(
        np.random.default_rng(0).integers(0, 256, 20_000, np.uint8)), 422, "cannot decode"),
    "sample rate 0": (wav_header(0, 1, 16, len(PCM_1S)) + PCM_1S, 422, "cannot decode"),
    "sample rate 4e9": (wav_header(4_000_000_000, 1, 16, len(PCM_1S)) + PCM_1S, 422,
                        "cannot decode"),
    "sample rate 1 Hz (16000 s claimed)": (wav_header(1, 1, 16, len(PCM_1S)) + PCM_1S, 413,
                                           "longer than 5 s"),
    "0 channels": (wav_header(16000, 0, 16, len(PCM_1S)) + PCM_1S, 422, "cannot decode"),
    "65535 channels": (wav_header(16000, 65535, 16, len(PCM_1S)) + PCM_1S, 422,
                       "cannot decode"),
    "0 bits per sample": (wav_header(16000, 1, 0, len(PCM_1S)) + PCM_1S, 422, "no decoder"),
    "header only, 0 samples": (wav_header(16000, 1, 16, 0), 422, "no samples"),
    "3 h of silent FLAC (bomb)": (silent_flac(3.0), 413, "longer than 5 s"),
    "3 h claimed by a 16 kHz 4 GiB header": (
        wav_header(16000, 1, 16, 0xFFFFFFFF) + tone_pcm(6.0), 413, "longer than 5 s"),
    "8-bit WAV": (eight_bit_wav(1.0), 200, 25),
    "float32 WAV": (sf_bytes(tone(1.0, 16000), 16000, "WAV", "FLOAT"), 200, 25),
    "stereo WAV": (sf_bytes(tone(1.0, 16000, 2), 16000, "WAV", "PCM_16"), 200, 25),
    "48 kHz WAV": (sf_bytes(tone(1.0, 48000), 48000, "WAV", "PCM_16"), 200, 25),
    "9-channel WAV": (sf_bytes(np.repeat(tone(1.0, 16000)[:, None], 9, 1), 16000, "WAV",
                               "PCM_16"), 200, 25),
    "MP4 with video posing as WAV": (mp4(1.0, audio=True), 200, 26),
    "MP4 without audio posing as WAV": (mp4(1.0, audio=False), 422, "no audio stream"),
    "LIST chunk claiming 1 GB (allocation bomb)": (list_chunk_bomb(), 422, "cannot decode"),
    "10 s of FLAC at 655 kHz (decode budget)": (sf_bytes(np.zeros(6_553_500), 655_350, "FLAC",
                                                         "PCM_16"), 413, "decode budget"),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_bad_audio_upload(client: httpx.Client, clean: None, case: str) -> None:
    data, status, expected = UPLOADS[case]
    started = time.monotonic()
    reply = upload(client, data, format="av")
    assert time.monotonic() - started < 10  # a bomb is refused at the cap, not decoded
    if status != 200:
        assert_clean_error(reply, status, str(expected))
        return
    assert reply.status_code == 200, reply.text
    _, frames, end = frames_of(reply.content)
    assert end["status"] == "complete"
    assert abs(len(frames) - int(expected)) <= 1, len(frames)  # AAC adds priming samples
    audio = np.frombuffer(b"".join(p[h["image_bytes"]:] for h, p in frames), "<i2")
    assert np.abs(audio).max() > 1000  # converted, not read as noise or silence


def test_raw_audio_body_of_zero_bytes_is_refused(client: httpx.Client, clean: None) -> None:
    reply = client.post("/generate-from-audio", content=b"", headers={"Content-Type": "audio/wav"})
    assert_clean_error(reply, 422, "empty")


# -- multipart abuse and slow bodies -------------------------------------------------------------


def test_many_multipart_fields_get_400(client: httpx.Client, clean: None) -> None:
    fields = {f"f{i}": "x" for i in range(100)}
    reply = client.post("/generate-from-audio", data=fields,
                        files={"audio_file": ("a.wav", WAV_1S, "audio/wav")})
    assert_clean_error(reply, 400, "Too many fields")


def test_two_files_get_400(client: httpx.Client, clean: None) -> None:
    reply = client.post("/generate-from-audio", files=[
        ("audio_file", ("a.wav", WAV_1S, "audio/wav")),
        ("audio_file", ("b.wav", WAV_1S, "audio/wav"))])
    assert_clean_error(reply, 400, "Too many files")


def test_declared_oversize_multipart_gets_413_before_the_body(client: httpx.Client,
                                                             clean: None) -> None:
    reply = upload(client, b"\0" * (MAX_UPLOAD_BYTES + 100_000))
    assert_clean_error(reply, 413, "limit")


def _address(edge: Edge) -> tuple[str, int]:
    parts = urlsplit(edge.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _multipart_head(boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio_file\"; "
            f"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()


def _status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return bool(sep) and len(body) >= int(line.split(b":")[1])
    return False


def _read_reply(sock: socket.socket, reply: bytes, until: float) -> bytes:
    """`reply` completed from the socket: headers and a Content-Length body."""
    while time.monotonic() < until and not _complete(reply):
        try:
            piece = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            time.sleep(0.005)
            continue
        if not piece:
            break
        reply += piece
    return reply


def test_chunked_oversize_multipart_is_cut_off_at_the_limit(edge: Edge, clean: None) -> None:
    """No Content-Length: the edge must stop reading at the byte limit, not spool the whole
    body to disk first. The client offers 40 MB and gets 413 long before sending it all."""
    boundary = "b0undary"
    offered = 40_000_000
    sent = 0
    with socket.create_connection(_address(edge), timeout=10) as sock:
        sock.sendall(b"POST /generate-from-audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Transfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + boundary.encode()
                     + b"\r\n\r\n")
        head = _multipart_head(boundary)
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        piece = b"\0" * 65536
        sock.settimeout(0.0)
        reply = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < offered and not reply:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
                except BlockingIOError:
                    time.sleep(0.005)
                with contextlib.suppress(BlockingIOError):
                    reply = sock.recv(65536)
        sock.settimeout(1.0)
        reply = _read_reply(sock, reply, time.monotonic() + 10)
    assert _status_of(reply) == 413, reply[:200]
    assert b"exceeds the limit" in reply
    assert sent < offered / 2, sent  # refused while the body was still coming


def test_slow_loris_upload_gets_408_and_others_are_served(edge: Edge, clean: None) -> None:
    """A client trickling its body is cut off after `services.upload_timeout_s`; meanwhile
    the edge answers everyone else at once."""
    boundary = "sl0w"
    head = _multipart_head(boundary)
    fast_part = WAV_1S + b"\0" * 1_100_000  # past the 1 MB spool: the part is on disk
    declared = len(head) + len(fast_part) + 500_000
    health_times: list[float] = []
    stop = threading.Event()

    def others() -> None:
        with edge.client(timeout=10) as c:
            while not stop.is_set():
                started = time.monotonic()
                assert c.get("/health").status_code == 200
                health_times.append(time.monotonic() - started)
                time.sleep(0.05)

    watcher = threading.Thread(target=others, daemon=True)
    watcher.start()
    try:
        with socket.create_connection(_address(edge), timeout=10) as sock:
            sock.sendall(b"POST /generate-from-audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: multipart/form-data; boundary=" + boundary.encode()
                         + b"\r\nContent-Length: %d\r\n\r\n" % declared + head + fast_part)
            started = time.monotonic()
            sock.settimeout(0.1)
            reply = b""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while not reply and time.monotonic() - started < UPLOAD_TIMEOUT_S + 5:
                    sock.sendall(b"\0" * 10)  # 100 bytes/s: 5000 s for the rest
                    with contextlib.suppress(TimeoutError):
                        reply = sock.recv(65536)
            elapsed = time.monotonic() - started
            reply = _read_reply(sock, reply, time.monotonic() + 2)
    finally:
        stop.set()
        watcher.join(10)
    assert _status_of(reply) == 408, reply[:200]
    assert b"upload_timeout_s" in reply
    assert UPLOAD_TIMEOUT_S - 0.2 < elapsed < UPLOAD_TIMEOUT_S + 1.5
    assert len(health_times) >= 5 and max(health_times) < 1.0


# -- text ----------------------------------------------------------------------------------------


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
    with socket.create_connection(_address(edge), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /generate?text=" + b"a" * length + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = _read_reply(sock, b"", time.monotonic() + 10)
    assert _status_of(reply) == status, reply[:300]
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


# -- names ---------------------------------------------------------------------------------------

HOSTILE_NAMES = ["..", "../demo", "./demo", "demo/../demo", "a/b", "/etc/passwd", "demo\x00",
                 "x\x00/../demo", "%2e%2e", "demo\\..\\demo"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_avatar_names_are_unknown(client: httpx.Client, clean: None, name: str) -> None:
    """Never resolved as paths: even names that would lead back to the real avatar miss."""
    for reply in (client.get("/avatar", params={"avatar": name}),
                  client.get("/generate", params={"text": "Hi.", "avatar": name}),
                  upload(client, WAV_1S, avatar=name)):
        assert_clean_error(reply, 404, "unknown avatar")


def test_hostile_names_over_grpc(stack: Stack, edge: Edge) -> None:
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        for name in HOSTILE_NAMES:
            with pytest.raises(grpc.RpcError) as caught:
                renderer.GetAvatar(renderer_pb2.GetAvatarRequest(name=name), timeout=10)
            assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                           grpc.StatusCode.NOT_FOUND), name
    with grpc.insecure_channel(edge.grpc_address) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        for name in ["../demo", "demo\x00", "a/b"]:
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Animate(iter([avatar_pb2.AnimateRequest(
                    config=avatar_pb2.AnimateConfig(avatar=name))]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, name
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Animate(iter([avatar_pb2.AnimateRequest(
                config=avatar_pb2.AnimateConfig(voice="../../etc/passwd"))]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("body,needle", [
    pytest.param({"frames_dir": "/etc"}, "frames_dir", id="frames_dir"),
    pytest.param({"audio_dir": "../../x"}, "audio_dir", id="audio_dir"),
    pytest.param({"token": ""}, "token", id="token"),
    pytest.param({"enabled": "yes please"}, "enabled", id="wrong type"),
    pytest.param([True], "dict", id="not an object"),
])
def test_debug_config_refuses_extra_or_mistyped_fields(client: httpx.Client, clean: None,
                                                       body: object, needle: str) -> None:
    """The dump directories and the token are config-file only: the API cannot point the
    dumps at an arbitrary path or clear the token."""
    assert_clean_error(client.post("/debug/config", json=body), 422, needle)
    assert client.get("/debug/status").json()["enabled"] is False


# -- gRPC ----------------------------------------------------------------------------------------


def _animate_error(edge: Edge, requests: list[avatar_pb2.AnimateRequest],
                   timeout: float = 30) -> grpc.RpcError:
    with grpc.insecure_channel(edge.grpc_address) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Animate(iter(requests), timeout=timeout))
        frames = list(stub.Animate(iter([avatar_pb2.AnimateRequest(
            config=avatar_pb2.AnimateConfig()), avatar_pb2.AnimateRequest(
            audio=common_pb2.AudioChunk(pcm=tone_pcm(0.2)))]), timeout=30))
        assert len(frames) == 5  # the next good call works
    return caught.value


def test_animate_message_over_the_size_cap(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [
        avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig()),
        avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=b"\0" * 2 * MAX_MESSAGE_BYTES))])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_animate_text_of_a_million_chars(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig()),
                                  avatar_pb2.AnimateRequest(text=b"a " * 500_000)])
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5000 characters" in error.details()


def test_animate_text_before_config(edge: Edge, clean: None) -> None:
    error = _animate_error(edge, [avatar_pb2.AnimateRequest(text=b"Hi."),
                                  avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig())])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config:")


def test_animate_stream_that_never_ends_hits_its_deadline(stack: Stack, edge: Edge,
                                                          clean: None) -> None:
    async def never_ending() -> AsyncIterator[avatar_pb2.AnimateRequest]:
        yield avatar_pb2.AnimateRequest(config=avatar_pb2.AnimateConfig(avatar=AVATAR))
        yield avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=tone_pcm(0.4)))
        await asyncio.Event().wait()

    async def call() -> tuple[grpc.StatusCode, int]:
        received = 0
        async with grpc.aio.insecure_channel(edge.grpc_address) as channel:
            stub = avatar_pb2_grpc.AvatarStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Animate(never_ending(), timeout=1.5):
                    received += 1
        return caught.value.code(), received

    code, received = asyncio.run(call())
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received >= 10  # frames flowed until the deadline (the silence tail included)


def test_tts_stream_that_never_ends_hits_its_deadline(stack: Stack) -> None:
    async def never_ending() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
        yield tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig())
        yield tts_pb2.SynthesizeRequest(text=b"Half a sent")
        await asyncio.Event().wait()

    async def call() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(stack.tts.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.Synthesize(never_ending(), timeout=1.0):
                    pass
            return caught.value.code()

    assert asyncio.run(call()) == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while stack.inflight()["tts"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.inflight()["tts"] == 0


def test_over_size_messages_to_the_backends(stack: Stack) -> None:
    """Each backend caps a message at server.max_message_bytes (8 MiB by default)."""
    big = 9 * 1024 * 1024
    with grpc.insecure_channel(stack.tts.address) as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Synthesize(iter([tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig()),
                                       tts_pb2.SynthesizeRequest(text=b"a" * big)]), timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = list(stub.Synthesize(iter([tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesizeConfig()),
                                        tts_pb2.SynthesizeRequest(text=b"Fine.")]), timeout=30))
        assert sum(len(c.pcm) for c in ok) > 1000
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        tensor = common_pb2.Tensor(data=b"\0" * big, shape=[32, 16, 16],
                                   dtype=common_pb2.DTYPE_FLOAT32)
        with pytest.raises(grpc.RpcError) as caught:
            list(renderer.Render(iter([
                renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=AVATAR)),
                renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(features=tensor))]),
                timeout=30))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("tensor,field,needle", [
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "dtype": common_pb2.DTYPE_FLOAT16},
                 "frame.features.data", "expected 16384 bytes", id="float16 of float32 bytes"),
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "shape": [32, 16, 8]},
                 "frame.features.shape", "expected [32,16,16]", id="shape smaller than data"),
    pytest.param({"data": b"\0" * 32 * 16 * 16 * 4, "shape": [-1, 16, 16]},
                 "frame.features.shape", "got [-1,16,16]", id="negative dimension"),
])
def test_tensor_that_lies_about_its_bytes(stack: Stack, tensor: dict, field: str,
                                          needle: str) -> None:
    fields = {"shape": [32, 16, 16], "dtype": common_pb2.DTYPE_FLOAT32, **tensor}
    with grpc.insecure_channel(stack.renderers[0].address) as channel:
        renderer = renderer_pb2_grpc.RendererStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(renderer.Render(iter([
                renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(avatar=AVATAR)),
                renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                    features=common_pb2.Tensor(**fields)))]), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}: ") and needle in caught.value.details()
