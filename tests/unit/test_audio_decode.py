"""Decoding user audio: containers and codecs made with PyAV, resampling, downmix, errors."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from synctalk.audio.decode import AudioDecodeError, load_audio
from synctalk.audio.pcm import resample


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32
    )


def encode(container: str, codec: str, rate: int, channels: np.ndarray) -> bytes:
    """Encode [channels, n] float audio into an in-memory file."""
    layout = "stereo" if channels.shape[0] == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(channels, np.float32), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def peak_hz(x: np.ndarray, n: int = 8000) -> list[float]:
    """Frequencies of the two strongest spectral peaks of the middle of x."""
    mid = x[x.size // 2 - n // 2 : x.size // 2 + n // 2] * np.hanning(n)
    spec = np.abs(np.fft.rfft(mid))
    top = []
    for k in np.argsort(spec)[::-1]:
        if all(abs(k - t) > 5 for t in top):
            top.append(k)
        if len(top) == 2:
            break
    return sorted(k * 16000 / n for k in top)


def tone_amplitude(x: np.ndarray, freq: float) -> float:
    """Least-squares amplitude of a sinusoid at `freq` over the middle half of x."""
    mid = x[x.size // 4 : 3 * x.size // 4].astype(np.float64)
    t = np.arange(mid.size) / 16000
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef = np.linalg.lstsq(basis, mid, rcond=None)[0]
    return float(np.hypot(*coef))


@pytest.mark.parametrize(
    "container,codec,rate",
    [
        ("wav", "pcm_s16le", 16000),
        ("wav", "pcm_s16le", 8000),
        ("flac", "flac", 44100),
        ("ogg", "libopus", 48000),
        ("mp3", "libmp3lame", 44100),
        ("mp4", "aac", 48000),
    ],
)
def test_decodes_and_resamples_stereo(container: str, codec: str, rate: int) -> None:
    left, right = tone(440, rate), tone(1000, rate, amp=0.3)
    audio = load_audio(encode(container, codec, rate, np.stack([left, right])))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 16000) < 0.1 * 16000  # lossy codecs add priming/padding
    assert peak_hz(audio) == pytest.approx([440, 1000], abs=4)
    # Downmix = the mean of the channels: each tone at half its channel's amplitude.
    assert tone_amplitude(audio, 440) == pytest.approx(0.25, rel=0.15)
    assert tone_amplitude(audio, 1000) == pytest.approx(0.15, rel=0.15)


def test_wav_is_exact_after_resampling(tmp_path: Path) -> None:
    x = tone(300, 48000)
    data = encode("wav", "pcm_s16le", 48000, x[None])
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    from_path, from_bytes = load_audio(path), load_audio(data)
    assert np.array_equal(from_path, from_bytes)
    quantised = np.round(x * 32768).clip(-32768, 32767) / 32768
    np.testing.assert_allclose(from_path, resample(quantised, 48000), atol=1e-6)


def test_mono_16k_wav_passes_through_unchanged() -> None:
    x = tone(200, 16000)
    audio = load_audio(encode("wav", "pcm_s16le", 16000, x[None]))
    assert np.array_equal(audio, np.round(x * 32768).astype(np.int16) / np.float32(32768))


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty"),
        (b"this is not audio at all" * 50, "cannot decode"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "cannot decode|no samples|no audio"),
    ],
)
def test_undecodable_input_raises(data: bytes, match: str) -> None:
    with pytest.raises(AudioDecodeError, match=match):
        load_audio(data)


def test_missing_file_and_video_without_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(buf.getvalue())


def test_max_duration_guard() -> None:
    data = encode("flac", "flac", 16000, tone(440, 16000, seconds=3.0)[None])
    assert load_audio(data, max_seconds=3.5).size == 48000
    with pytest.raises(AudioDecodeError, match="longer than 2 s"):
        load_audio(data, max_seconds=2.0)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(AudioDecodeError, ValueError)
