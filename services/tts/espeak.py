"""The espeak-ng fallback voice: Debian's `espeak-ng` binary, run once per sentence.

Robotic but always available, so a server whose piper voice cannot load still speaks.
`--stdout` writes a WAV whose RIFF and data sizes are placeholders (it streams), so the
header is parsed here by hand rather than trusted.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np

ESPEAK_BINARY = "espeak-ng"
ESPEAK_WPM = 175  # espeak-ng's default speaking rate, words per minute


def espeak_available() -> bool:
    return shutil.which(ESPEAK_BINARY) is not None


def parse_streamed_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono 16-bit WAV; the data chunk runs to the end of the bytes."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV")
    pos, sample_rate = 12, 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt, channels, sample_rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if (fmt, channels, bits) != (1, 1, 16):
                raise ValueError(f"unexpected WAV format {fmt}/{channels}ch/{bits}bit")
        elif chunk_id == b"data":
            payload = data[body : min(len(data), body + size)]
            payload = payload[: len(payload) // 2 * 2]
            return np.frombuffer(payload, dtype="<i2").copy(), sample_rate
        pos = body + size + (size & 1)
    raise ValueError("espeak-ng WAV has no data chunk")


class EspeakVoice:
    """Synthesizes with the espeak-ng binary; `speed` scales the words-per-minute rate."""

    engine = "espeak-ng"

    def __init__(self, voice_id: str, espeak_voice: str, timeout_s: float = 30.0) -> None:
        self.id = voice_id
        self.espeak_voice = espeak_voice
        self.language = espeak_voice
        self.timeout_s = timeout_s
        self.native_sample_rate = 22050
        if not espeak_available():
            raise FileNotFoundError(f"{ESPEAK_BINARY} is not on PATH")

    def synthesize(self, text: str, speed: float, deterministic: bool) -> np.ndarray:
        """float32 mono at `native_sample_rate`; espeak-ng is deterministic anyway."""
        wpm = max(80, round(ESPEAK_WPM * speed))
        result = subprocess.run(
            [ESPEAK_BINARY, "-v", self.espeak_voice, "-s", str(wpm), "--stdout", "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=self.timeout_s,
            check=True,
        )
        samples, sample_rate = parse_streamed_wav(result.stdout)
        self.native_sample_rate = sample_rate
        return samples.astype(np.float32) / 32768.0
