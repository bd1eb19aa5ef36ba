"""Audio files that lie, break or bomb: builders for the bad-input catalogue (docs/security.md)."""

from __future__ import annotations

import io
import struct
import wave

import av
import numpy as np
import soundfile as sf

from tests.support.audio import tone_pcm, wav_bytes


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
WAV_1S = wav_bytes(PCM_1S)  # a good file, the base of the broken ones
