"""Property-based fuzzing (issue 8 §3, issue 20) of the gRPC message validators: tensors, render
streams, audio chunks and streamed UTF-8 text either validate or are refused naming the
field.

Each property either holds or the input is refused with the documented error, never
another exception and never a hang.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audio_features.chunks import ChunkCursor
from services.renderer.requests import FrameChecker, parse_config, parse_tensor
from services.tts.utf8 import StreamingText
from synctalk.models.unet import AUDIO_SHAPES
from synctalk.rpc.errors import RpcError
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2
from tests.support.fuzz import FUZZ

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
