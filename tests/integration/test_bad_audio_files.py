"""The bad-input catalogue (docs/security.md), audio files: lying, broken and bomb-like
files and odd but valid formats, uploaded to a real stack on 127.0.0.1. After each refusal
the edge must still serve, hold no session or downstream stream, and have left no temporary
file (named or open) behind."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.support import bad_input
from tests.support.audio import tone_pcm
from tests.support.hostile_audio import (
    PCM_1S,
    WAV_1S,
    eight_bit_wav,
    list_chunk_bomb,
    mp4,
    sf_bytes,
    silent_flac,
    tone,
    wav_header,
)
from tests.support.http import assert_clean_error, frames_of, upload

private_tmp, edge, clean = bad_input.register()


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
