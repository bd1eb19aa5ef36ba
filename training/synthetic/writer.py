"""Writing a clip: H.264 + AAC in an MP4 through PyAV, and its ground truth beside it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np

from synctalk.audio.pcm import float_to_s16le

AUDIO_CHUNK = 1024


def write_mp4(path: Path, frames: Iterable[np.ndarray], audio: np.ndarray | None, sample_rate: int,
              fps: int = 25, crf: int = 17) -> int:
    """Encode BGR uint8 frames (all the same size) and mono float audio; returns the frame count.
    Written to a temporary name and renamed, so a half-written file never has the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    count = 0
    with av.open(str(tmp), mode="w", format="mp4") as container:
        video = None
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            if video is None:
                video = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
                video.height, video.width = frame.shape[:2]
                video.pix_fmt = "yuv420p"
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            vf.pts = count
            for packet in video.encode(vf):
                container.mux(packet)
            count += 1
        if video is not None:
            for packet in video.encode():
                container.mux(packet)
        if astream is not None and audio is not None:
            pcm = np.frombuffer(float_to_s16le(audio), dtype="<i2")
            for start in range(0, pcm.size, AUDIO_CHUNK):
                block = pcm[start: start + AUDIO_CHUNK][None, :]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="s16", layout="mono")
                af.sample_rate = sample_rate
                af.pts = start
                for packet in astream.encode(af):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    os.replace(tmp, path)
    return count


def write_truth(path: Path, **arrays: Any) -> None:
    """Save the per-frame ground truth (np.savez, atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
