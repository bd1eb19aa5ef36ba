"""Debug dumps of what a session showed and played, when `settings.debug` asks for them.

Frames go to `<frames_dir>/<session>/NNNNNN.jpg` (numbered on across the session's
utterances) and audio to `<audio_dir>/<session>.wav` (16 kHz mono 16-bit, with a proper
header, appended utterance after utterance): exactly the pictures and samples that left the
edge together. Only server-made session ids reach this module, so paths cannot escape the
dump folders. Writes run on one background thread, in order, off the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from services.edge.orchestrator import Frame
from services.edge.sessions import SESSION_ID_RE, Session
from synctalk.audio.pcm import SAMPLE_RATE
from synctalk.config import DebugConfig
from synctalk.log import get_logger
from synctalk.rpc.gen.lipsync.v1 import common_pb2

log = get_logger("services.edge.debug")

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-debug")


def debug_status(debug: DebugConfig) -> dict[str, object]:
    return {
        "enabled": debug.enabled,
        "save_frames": debug.save_frames,
        "save_audio": debug.save_audio,
        "frames_dir": debug.frames_dir,
        "audio_dir": debug.audio_dir,
    }


class DebugRecorder:
    """Dumps one utterance of a session; settings are read once, when the utterance starts."""

    def __init__(self, debug: DebugConfig, session: Session) -> None:
        if not SESSION_ID_RE.match(session.id):
            raise ValueError(f"not a server-made session id: {session.id!r}")
        self.session = session
        self.frames_dir = Path(debug.frames_dir) / session.id if debug.save_frames else None
        self.audio_path = Path(debug.audio_dir) / f"{session.id}.wav" if debug.save_audio else None
        self._audio: list[bytes] = []
        self._pending: list[Future[None]] = []

    @classmethod
    def maybe(cls, debug: DebugConfig, session: Session) -> DebugRecorder | None:
        if debug.enabled and (debug.save_frames or debug.save_audio):
            return cls(debug, session)
        return None

    def add(self, frame: Frame) -> None:
        if self.frames_dir is not None:
            number = self.session.debug_frames
            self.session.debug_frames += 1
            self._pending.append(_writer.submit(_write_frame, self.frames_dir, number, frame))
        if self.audio_path is not None:
            self._audio.append(frame.audio)

    async def close(self) -> None:
        """Write the audio and wait for every pending write."""
        if self.audio_path is not None and self._audio:
            pcm = b"".join(self._audio)
            self._audio = []
            self._pending.append(_writer.submit(_append_wav, self.audio_path, pcm))
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                await asyncio.wrap_future(future)
            except OSError as err:
                log.warning("debug.write_failed", session_id=self.session.id, reason=str(err))


def _write_frame(folder: Path, number: int, frame: Frame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:06d}.jpg"
    if frame.encoding == common_pb2.IMAGE_ENCODING_RAW_RGB:
        rgb = np.frombuffer(frame.image, np.uint8).reshape(frame.height, frame.width, 3)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"cannot encode {path}")
        path.write_bytes(jpeg.tobytes())
    else:
        path.write_bytes(frame.image)


def _append_wav(path: Path, pcm: bytes) -> None:
    samples = np.frombuffer(pcm, "<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with sf.SoundFile(path, "r+") as wav:
            wav.seek(0, sf.SEEK_END)
            wav.write(samples)
    else:
        sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
