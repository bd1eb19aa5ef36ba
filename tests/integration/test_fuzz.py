"""Property-based fuzzing (issue 8 §3, issue 20) of the code that takes untrusted input: the
audio decoder (WAV headers that lie about sizes, rates and channels included), the streaming
mel/feature windowing, the gRPC message validators, and the edge's HTTP API (JSON bodies with
non-finite numbers and any code point, malformed query values, lying uploads: never a 500,
and after each one no session held and the next request served).

Each property either holds or the input is refused with the documented error, never
another exception and never a hang. Examples are few and deadlines generous so the whole
module stays well under a minute on a shared 2-core machine.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import wave
from functools import lru_cache

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audio_features.chunks import ChunkCursor
from services.renderer.requests import FrameChecker, parse_config, parse_tensor
from services.tts.utf8 import StreamingText
from synctalk.audio.decode import AudioDecodeError, load_audio
from synctalk.audio.mel import wav2lip_mel, whisper_log_mel
from synctalk.audio.mel_stream import MelStream
from synctalk.audio.pcm import SAMPLE_RATE, SAMPLES_PER_FRAME
from synctalk.audio.windows import frame_count
from synctalk.config import ModelsConfig
from synctalk.features import get_extractor
from synctalk.models.unet import AUDIO_SHAPES
from synctalk.rpc.errors import RpcError
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2
from tests.support.features import drain, signal, stream_in_chunks

FUZZ = settings(deadline=None, max_examples=40, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DECODE_FUZZ = settings(FUZZ, max_examples=150)  # cheap per example, and the riskiest input
DECODE_LIMIT_S = 20.0  # one decode of a few KB must never take this long (a hang)


# -- (a) audio decoder -----------------------------------------------------------------------


def wav(rate: int, channels: int, width: int, n: int, seed: int = 0) -> bytes:
    """A small PCM WAV of noise (any rate, channel count, sample width)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n * channels * width, dtype=np.uint8).tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


def float_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """A 32-bit IEEE float WAV: the format whose data bytes can spell NaN and infinity."""
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="FLOAT")
    return out.getvalue()


def assert_decodes_or_refuses(data: bytes) -> np.ndarray | None:
    """load_audio either gives float32 mono finite samples or raises AudioDecodeError."""
    started = time.monotonic()
    try:
        out = load_audio(data, max_seconds=30)
    except AudioDecodeError:
        out = None
    assert time.monotonic() - started < DECODE_LIMIT_S
    if out is not None:
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float32 and out.ndim == 1 and out.size > 0
        assert np.isfinite(out).all()
    return out


@DECODE_FUZZ
@given(st.binary(max_size=4096))
def test_decoder_on_arbitrary_bytes(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@DECODE_FUZZ
@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    channels=st.integers(1, 3),
    width=st.sampled_from([1, 2, 3, 4]),
    n=st.integers(1, 2000),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 20_000)),
)
def test_decoder_on_mutated_wavs(rate: int, channels: int, width: int, n: int,
                                 edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(wav(rate, channels, width, n))
    for pos, value in edits:  # header bytes included: sizes, rates, formats, widths
        data[pos % len(data)] = value
    if cut is not None:
        data = data[:cut]
    out = assert_decodes_or_refuses(bytes(data))
    if not edits and cut is None and n >= 2:  # untouched: every sample there, at 16 kHz
        assert out is not None
        assert abs(out.size - n * SAMPLE_RATE / rate) <= 2 + SAMPLE_RATE / rate


@FUZZ
@given(st.lists(st.sampled_from([0.0, 0.5, -1.0, math.nan, math.inf, -math.inf, 1e30]),
                min_size=1, max_size=64),
       st.sampled_from([16000, 44100]))
def test_decoder_never_returns_nan_or_infinity(values: list[float], rate: int) -> None:
    """A float WAV carries any 32-bit pattern; what comes back must still be finite."""
    samples = np.resize(np.asarray(values, np.float32), 800)
    assert_decodes_or_refuses(float_wav(samples, rate))


# -- (b) streaming windows equal the offline ones --------------------------------------------


def random_splits(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) pieces of range(n) cut at the given (unordered, repeated) positions."""
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(zip(points[:-1], points[1:], strict=True))


@FUZZ
@given(n=st.integers(1, 12_000), cuts=st.lists(st.integers(0, 12_000), max_size=12),
       seed=st.integers(0, 2**16))
def test_wav2lip_mel_stream_equals_offline_for_any_split(n: int, cuts: list[int],
                                                          seed: int) -> None:
    x = signal(n, seed)
    stream, got, done = MelStream.wav2lip(), [], 0
    for a, b in random_splits(n, cuts):
        stream.push(x[a:b])
        done = drain(stream, got, done, stream.ready)
    stream.finish()
    drain(stream, got, done, stream.ready)
    offline = wav2lip_mel(x)
    assert offline.shape[0] == n // 200 + 1
    assert np.array_equal(np.concatenate(got), offline)


@FUZZ
@given(n=st.integers(1, 8_000), cuts=st.lists(st.integers(0, 8_000), max_size=12),
       seed=st.integers(0, 2**16), first=st.integers(-96, 0))
def test_whisper_mel_stream_equals_offline_for_any_split(n: int, cuts: list[int], seed: int,
                                                          first: int) -> None:
    x = signal(n, seed)
    stop = n // 160 + 20
    stream, got, done = MelStream.whisper(first), [], first
    for a, b in random_splits(n, cuts):
        stream.push(x[a:b])
        done = drain(stream, got, done, min(stream.ready, stop))
    stream.finish()
    drain(stream, got, done, stop)
    assert np.array_equal(np.concatenate(got), whisper_log_mel(x, first, stop))


@settings(FUZZ, max_examples=200)
@given(st.integers(0, 10 * 3600 * SAMPLE_RATE))
def test_frame_count_is_ceil_duration_times_25(n: int) -> None:
    assert frame_count(n) == math.ceil(n * 25 / SAMPLE_RATE)
    assert frame_count(n) * SAMPLES_PER_FRAME >= n > (frame_count(n) - 1) * SAMPLES_PER_FRAME


@lru_cache(maxsize=1)
def ave():  # noqa: ANN201 (the extractor type lives behind the registry)
    return get_extractor("ave", ModelsConfig(device="cpu"))


@settings(FUZZ, max_examples=4)
@given(n=st.integers(1, 20_000), size=st.integers(1, 7_000), seed=st.integers(0, 2**16))
def test_ave_stream_equals_offline_and_counts_frames(n: int, size: int, seed: int) -> None:
    """The encoder is costly: a handful of examples, random length and chunk size."""
    extractor = ave()
    x = signal(n, seed)
    offline = extractor.extract(x)
    frames, _ = stream_in_chunks(extractor, x, size)
    assert offline.shape[0] == math.ceil(n / SAMPLE_RATE * 25) == len(frames)
    assert [i for i, _ in frames] == list(range(len(frames)))
    assert np.array_equal(np.stack([f for _, f in frames]), offline)


# -- (c) gRPC message validators -------------------------------------------------------------

DTYPES = st.sampled_from([common_pb2.DTYPE_FLOAT32, common_pb2.DTYPE_FLOAT16, 0, 3, 7, 99])
DOCUMENTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


def tensors(shape: tuple[int, ...]) -> st.SearchStrategy[common_pb2.Tensor]:
    """Tensors near `shape`: right or wrong dtype, shape, byte count; finite or not."""
    size = int(np.prod(shape))

    @st.composite
    def build(draw: st.DrawFn) -> common_pb2.Tensor:
        dtype = draw(DTYPES)
        dims = draw(st.one_of(st.just(list(shape)),
                              st.lists(st.integers(-2, 40), max_size=4)))
        width = {common_pb2.DTYPE_FLOAT16: 2}.get(dtype, 4)
        nbytes = draw(st.one_of(st.just(size * width), st.integers(0, size * 4 + 8)))
        fill = draw(st.sampled_from(["zeros", "noise", "nan", "inf"]))
        if fill == "noise":
            data = np.random.default_rng(nbytes).integers(0, 256, nbytes, np.uint8).tobytes()
        else:
            value = {"zeros": 0.0, "nan": math.nan, "inf": math.inf}[fill]
            np_dtype = np.float16 if width == 2 else np.float32
            data = np.full(nbytes // width + 1, value, np_dtype).tobytes()[:nbytes]
        return common_pb2.Tensor(dtype=dtype, shape=dims, data=data)

    return build()


def refused(err: RpcError, *fields: str) -> None:
    assert err.code in DOCUMENTED
    assert err.code != grpc.StatusCode.INVALID_ARGUMENT or err.message.startswith(fields)


@FUZZ
@given(mode=st.sampled_from(list(AUDIO_SHAPES)), data=st.data())
def test_parse_tensor_validates_or_names_the_field(mode: str, data: st.DataObject) -> None:
    shape = AUDIO_SHAPES[mode]
    tensor = data.draw(tensors(shape))
    try:
        array = parse_tensor(tensor, shape, "frame.features")
    except RpcError as err:
        refused(err, "frame.features.dtype", "frame.features.shape", "frame.features.data")
        return
    assert array.dtype == np.float32 and array.shape == shape and np.isfinite(array).all()
    assert tensor.dtype in (common_pb2.DTYPE_FLOAT32, common_pb2.DTYPE_FLOAT16)


frames_strategy = st.builds(
    common_pb2.FeatureFrame,
    index=st.integers(-3, 6),
    mode=st.sampled_from(["", "ave", "whisper", "bogus"]),
    features=st.one_of(tensors(AUDIO_SHAPES["ave"]), tensors(AUDIO_SHAPES["whisper"])),
    voiced=st.booleans(),
    rms=st.sampled_from([0.0, 0.1, -1.0, math.nan, math.inf]),
)
configs = st.builds(
    renderer_pb2.RenderConfig,
    avatar=st.text(max_size=20),
    encoding=st.integers(-2, 5),
    jpeg_quality=st.integers(-5, 120),
    start_frame=st.integers(-5, 100),
    crop_only=st.booleans(),
)
render_requests = st.one_of(
    st.builds(renderer_pb2.RenderRequest, config=configs),
    st.builds(renderer_pb2.RenderRequest, frame=frames_strategy),
    st.just(renderer_pb2.RenderRequest()),
)


@FUZZ
@given(first=st.one_of(st.none(), render_requests), rest=st.lists(render_requests, max_size=6),
       max_frames=st.integers(0, 5))
def test_render_stream_validates_or_names_the_field(first: renderer_pb2.RenderRequest | None,
                                                    rest: list[renderer_pb2.RenderRequest],
                                                    max_frames: int) -> None:
    try:
        options = parse_config(first, default_quality=80)
    except RpcError as err:
        refused(err, "config")
        return
    assert 1 <= options.jpeg_quality <= 100 and options.start_frame >= 0
    checker = FrameChecker(max_frames, "ave")
    for expected, request in enumerate(rest):
        try:
            frame = checker.check(request)
        except RpcError as err:
            refused(err, "frame")
            return
        assert frame.index == expected < max_frames
        assert frame.features.shape == AUDIO_SHAPES[frame.mode]
        assert math.isfinite(frame.rms) and frame.rms >= 0


chunks_strategy = st.builds(
    common_pb2.AudioChunk,
    pcm=st.binary(max_size=700),
    sample_rate=st.sampled_from([0, 16000, 8000, 44100]),
    start_sample=st.integers(-1, 1200),
)


@FUZZ
@given(st.lists(chunks_strategy, max_size=8), st.floats(0.0, 0.05))
def test_audio_chunks_validate_or_name_the_field(chunks: list[common_pb2.AudioChunk],
                                                 max_seconds: float) -> None:
    cursor = ChunkCursor(max_seconds)
    total = 0
    for k, chunk in enumerate(chunks):
        try:
            samples = cursor.accept(chunk)
        except RpcError as err:
            refused(err, f"chunk[{k}].")
            return
        assert samples.dtype == np.float32 and samples.size == len(chunk.pcm) // 2
        total += samples.size
        assert chunk.start_sample == total - samples.size and total <= cursor.max_samples


@FUZZ
@given(st.lists(st.binary(max_size=12), max_size=8), st.integers(0, 30))
def test_streamed_utf8_decodes_or_names_the_byte(pieces: list[bytes], max_chars: int) -> None:
    text = StreamingText(max_chars)
    out = []
    try:
        for piece in pieces:
            out.append(text.feed(piece))
        out.append(text.finish())
    except RpcError as err:
        refused(err, "text")
        if err.code == grpc.StatusCode.INVALID_ARGUMENT:
            offset = int(err.message.rsplit(" ", 1)[1])
            whole = b"".join(pieces)
            with pytest.raises(UnicodeDecodeError) as bad:
                whole.decode("utf-8")
            assert offset == bad.value.start
        return
    assert "".join(out) == b"".join(pieces).decode("utf-8")
    assert len("".join(out)) <= max_chars


# -- (e) lying audio containers, decoded within the budget ------------------------------------------


def lying_wav(rate: int, channels: int, bits: int, data_size: int, riff_size: int,
              chunks: list[tuple[bytes, int, int]], n: int) -> bytes:
    """A WAV whose header fields (and extra chunks: id, declared size, bytes present) say
    whatever they like; `n` bytes of noise follow as data."""
    block = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF,
                      block & 0xFFFF, bits)
    extra = b"".join(cid + struct.pack("<I", size) + b"\x01" * present
                     for cid, size, present in chunks)
    data = np.random.default_rng(n).integers(0, 256, n, np.uint8).tobytes()
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + extra + b"data" + struct.pack("<I", data_size) + data)


U32 = st.integers(0, 0xFFFFFFFF)
LYING_WAVS = st.builds(
    lying_wav,
    rate=st.one_of(st.sampled_from([0, 1, 8000, 16000, 48000, 655_350, 4_000_000_000]), U32),
    channels=st.one_of(st.sampled_from([0, 1, 2, 8, 64, 255, 65535]), st.integers(0, 0xFFFF)),
    bits=st.sampled_from([0, 8, 16, 24, 32, 64]),
    data_size=st.one_of(st.sampled_from([0, 100, 0xFFFFFFFF]), U32),
    riff_size=U32,
    chunks=st.lists(st.tuples(st.sampled_from([b"LIST", b"fact", b"bext", b"iXML", b"id3 ",
                                               b"junk"]),
                              st.one_of(st.sampled_from([0, 1 << 30, 0xFFFFFFF0]), U32),
                              st.integers(0, 64)), max_size=3),
    n=st.integers(0, 4000),
)


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@FUZZ
@given(LYING_WAVS)
def test_lying_wav_headers_cost_no_more_than_the_budget(data: bytes) -> None:
    """Whatever the header claims (rates to 4 GHz, 65535 channels, chunks of 4 GB), the
    decode stays within its budget: it answers in time and the process's peak memory does
    not jump by what the header claimed."""
    from synctalk.audio.decode import limit_ffmpeg_allocations

    assert limit_ffmpeg_allocations()
    before = peak_rss_bytes()
    started = time.monotonic()
    try:
        out = load_audio(data, max_seconds=30, max_samples=30 * 192_000)
    except AudioDecodeError:
        out = None
    assert time.monotonic() - started < DECODE_LIMIT_S
    assert peak_rss_bytes() - before < 200 * 1024 * 1024
    if out is not None:
        assert out.dtype == np.float32 and out.size <= 31 * SAMPLE_RATE
        assert np.isfinite(out).all()


# -- (f) the edge's HTTP API: malformed JSON and query values, lying uploads -------------------------

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
