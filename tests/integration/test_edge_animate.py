"""The edge's gRPC Avatar.Animate against a real stack on 127.0.0.1: audio and text in, frames
with their exact audio slice out, resampling, barge-in with `cancel`, the silence tail of
live input, errors, and the example client writing an mp4."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
import soxr

from synctalk.audio.pcm import float_to_s16le, s16le_to_float
from synctalk.rpc.gen.lipsync.v1 import avatar_pb2, avatar_pb2_grpc, common_pb2
from tests.support.animate import LiveCall, audio_requests, config, joined_audio
from tests.support.audio import tone_pcm, wav_bytes
from tests.support.paths import ROOT
from tests.support.stack import AVATAR, AVATAR_SIZE, Edge, Stack


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge()



def test_audio_in_frames_out_each_with_its_exact_slice(stub: avatar_pb2_grpc.AvatarStub) -> None:
    pcm = tone_pcm(1.0)
    frames = list(stub.Animate(iter([config(avatar=AVATAR), *audio_requests(pcm, 999 * 2)]),
                               timeout=60))
    assert len(frames) == 25
    assert [f.frame.index for f in frames] == list(range(25))
    assert [f.frame.pts_ms for f in frames] == [40 * i for i in range(25)]
    assert joined_audio(frames) == pcm
    assert len({f.session_id for f in frames}) == 1 and len(frames[0].session_id) == 32
    assert {(f.frame.width, f.frame.height) for f in frames} == {AVATAR_SIZE}
    assert {f.frame.encoding for f in frames} == {common_pb2.IMAGE_ENCODING_JPEG}


def test_other_sample_rates_are_resampled(stub: avatar_pb2_grpc.AvatarStub) -> None:
    rate = 48000
    t = np.arange(int(0.8 * rate)) / rate
    signal = (0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    pcm = float_to_s16le(signal)
    frames = list(stub.Animate(iter([config(sample_rate=rate),
                                     *audio_requests(pcm, 1234 * 2, rate)]), timeout=60))
    expected = soxr.resample(s16le_to_float(pcm), rate, 16000, quality="HQ")
    assert len(frames) == math.ceil(len(expected) / 640) == 20
    got = s16le_to_float(joined_audio(frames))[: len(expected)]
    assert np.corrcoef(got[800:-800], expected[800:-800])[0, 1] > 0.99


def test_raw_rgb_frames(stub: avatar_pb2_grpc.AvatarStub) -> None:
    frames = list(stub.Animate(iter([config(encoding=common_pb2.IMAGE_ENCODING_RAW_RGB),
                                     *audio_requests(tone_pcm(0.2))]), timeout=60))
    assert len(frames) == 5
    width, height = AVATAR_SIZE
    assert {len(f.frame.data) for f in frames} == {width * height * 3}


def test_text_is_spoken_through_tts(stub: avatar_pb2_grpc.AvatarStub) -> None:
    frames = list(stub.Animate(iter([config(), avatar_pb2.AnimateRequest(text=b"Good evening.")]),
                               timeout=60))
    assert len(frames) > 15
    assert np.abs(np.frombuffer(joined_audio(frames), "<i2")).max() > 2000


def test_pause_in_live_input_flushes_the_held_back_frames(stub: avatar_pb2_grpc.AvatarStub) -> None:
    """Without more input the last 8 frames would wait for audio that never comes; the edge
    pads silence after a short pause, so every frame of what was said arrives."""
    pcm = tone_pcm(0.6)
    live = LiveCall(stub, config())
    live.send(*audio_requests(pcm))
    live.wait_frames(15, timeout=5)
    assert joined_audio(live.frames)[: len(pcm)] == pcm
    live.close()
    assert live.error is None


def test_cancel_stops_the_utterance_and_the_next_one_follows(
    stack: Stack, stub: avatar_pb2_grpc.AvatarStub
) -> None:
    long_pcm, short_pcm = tone_pcm(4.0), tone_pcm(0.4, freq=500.0)
    live = LiveCall(stub, config())
    live.send(*audio_requests(long_pcm))
    live.wait_frames(5)
    live.send(avatar_pb2.AnimateRequest(cancel=avatar_pb2.Cancel()))
    cancelled_at = time.monotonic()
    while stack.inflight()["renderer"] and time.monotonic() - cancelled_at < 1.0:
        time.sleep(0.01)
    assert stack.inflight()["renderer"] == 0  # the first utterance's streams are gone
    time.sleep(0.2)
    count_at_cancel = len(live.frames)
    live.send(*audio_requests(short_pcm))
    live.close()
    assert live.error is None
    assert count_at_cancel < 100  # the 4 s utterance did not play out
    new = live.frames[count_at_cancel:]
    assert len(new) >= 10 and joined_audio(new)[: len(short_pcm)] == short_pcm
    indices = [f.frame.index for f in live.frames]
    assert indices == sorted(set(indices))  # numbering counts on across utterances


def test_text_after_audio_interrupts_it(stub: avatar_pb2_grpc.AvatarStub) -> None:
    live = LiveCall(stub, config())
    live.send(*audio_requests(tone_pcm(4.0)))
    live.wait_frames(3)
    live.send(avatar_pb2.AnimateRequest(text=b"Now I speak."))
    live.close()
    assert live.error is None
    assert len(live.frames) < 100 + 10


BAD = {
    "audio before config": ([avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=b"\0\0"))],
                            grpc.StatusCode.INVALID_ARGUMENT, "config"),
    "no message": ([], grpc.StatusCode.INVALID_ARGUMENT, "config"),
    "unknown avatar": ([config(avatar="nobody")], grpc.StatusCode.NOT_FOUND, "nobody"),
    "unknown voice": ([config(voice="nobody")], grpc.StatusCode.NOT_FOUND, "nobody"),
    "bad quality": ([config(jpeg_quality=101)], grpc.StatusCode.INVALID_ARGUMENT,
                    "config.jpeg_quality"),
    "odd pcm": ([config(), avatar_pb2.AnimateRequest(audio=common_pb2.AudioChunk(pcm=b"\0"))],
                grpc.StatusCode.INVALID_ARGUMENT, "audio.pcm"),
    "config twice": ([config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "config"),
    "empty message": ([config(), avatar_pb2.AnimateRequest()], grpc.StatusCode.INVALID_ARGUMENT,
                      "payload"),
    "bad utf-8": ([config(), avatar_pb2.AnimateRequest(text=b"ok \xff")],
                  grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_its_status(stub: avatar_pb2_grpc.AvatarStub, case: str) -> None:
    requests, code, needle = BAD[case]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Animate(iter(requests), timeout=30))
    assert caught.value.code() == code
    assert needle in caught.value.details()


def test_session_cap_refuses_with_resource_exhausted(stack: Stack) -> None:
    edge = stack.edge(max_sessions=1)
    with grpc.insecure_channel(edge.grpc_address) as channel:
        stub = avatar_pb2_grpc.AvatarStub(channel)
        live = LiveCall(stub, config())
        live.send(*audio_requests(tone_pcm(0.2)))
        live.wait_frames(5)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Animate(iter([config()]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        live.close()
        assert len(list(stub.Animate(iter([config(), *audio_requests(tone_pcm(0.2))]),
                                     timeout=30))) == 5


def test_example_client_writes_an_mp4(edge: Edge, tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    wav.write_bytes(wav_bytes(float_to_s16le(s16le_to_float(tone_pcm(1.0, 22050))), 22050))
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "animate_client.py"), str(wav), str(out),
         "--target", edge.grpc_address],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "25 frames" in result.stdout
    with av.open(io.BytesIO(out.read_bytes())) as container:
        assert len(list(container.decode(video=0))) == 25
        assert container.streams.audio[0].codec_context.name == "aac"
        assert abs(float(container.duration) / 1e6 - 1.0) < 0.1
