"""Debug dumps of what a session showed and played, when `settings.debug` asks for them.

Frames go to `<frames_dir>/<session>/NNNNNN.jpg` (numbered on across the session's
utterances) and audio to `<audio_dir>/<session>.wav` (16 kHz mono 16-bit, with a proper
header, appended utterance after utterance): exactly the pictures and samples that left the
edge together. Only server-made session ids reach this module, so paths cannot escape the
dump folders. Writes run on one background thread, in order, off the event loop.

A dump is best effort and must never hurt the session it records: a write that fails (an
unwritable folder, a full disk; soundfile reports those as RuntimeError, not OSError) is
logged once per recorder and per kind, stops further writes of that kind, and leaves no
partial file: every file is written under a `.part` name and renamed into place only once
complete. Neither `add` nor `close` ever raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
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
        self.failed: set[str] = set()  # kinds ("frames", "audio") whose writes failed

    @classmethod
    def maybe(cls, debug: DebugConfig, session: Session) -> DebugRecorder | None:
        if debug.enabled and (debug.save_frames or debug.save_audio):
            return cls(debug, session)
        return None

    def add(self, frame: Frame) -> None:
        if self.frames_dir is not None and "frames" not in self.failed:
            number = self.session.debug_frames
            self.session.debug_frames += 1
            self._submit("frames", _write_frame, self.frames_dir, number, frame)
        if self.audio_path is not None and "audio" not in self.failed:
            self._audio.append(frame.audio)

    async def close(self) -> None:
        """Write the audio and wait for every pending write; never raises."""
        if self.audio_path is not None and self._audio and "audio" not in self.failed:
            pcm = b"".join(self._audio)
            self._audio = []
            self._submit("audio", _append_wav, self.audio_path, pcm)
        pending, self._pending = self._pending, []
        for future in pending:
            with contextlib.suppress(Exception):  # reported by `_done`
                await asyncio.wrap_future(future)

    def _submit(self, kind: str, write, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            future = _writer.submit(write, *args)
        except RuntimeError as err:  # the writer is shut down (process exit)
            self._failed(kind, err)
            return
        future.add_done_callback(lambda done: self._done(kind, done))
        self._pending.append(future)

    def _done(self, kind: str, future: Future[None]) -> None:
        err = None if future.cancelled() else future.exception()
        if err is not None:
            self._failed(kind, err)

    def _failed(self, kind: str, err: BaseException) -> None:
        if kind not in self.failed:
            self.failed.add(kind)
            log.warning("debug.write_failed", session_id=self.session.id, kind=kind,
                        error=f"{type(err).__name__}: {err}",
                        hint="debug dumps of this kind stop for this utterance")


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _write_frame(folder: Path, number: int, frame: Frame) -> None:
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:06d}.jpg"
    try:
        if frame.encoding == common_pb2.IMAGE_ENCODING_RAW_RGB:
            rgb = np.frombuffer(frame.image, np.uint8).reshape(frame.height, frame.width, 3)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise OSError(f"cannot encode {path}")
            data = jpeg.tobytes()
        else:
            data = frame.image
        _write_whole(path, data)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise


def _write_whole(path: Path, data: bytes) -> None:
    """`data` to `path`, complete or not at all."""
    part = _part(path)
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _append_wav(path: Path, pcm: bytes) -> None:
    """Append to the session's WAV (or start it); the new file replaces the old one only
    once written whole, so a failure leaves the previous one as it was."""
    samples = np.frombuffer(pcm, "<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = _part(path)
    try:
        if path.exists():
            shutil.copyfile(path, part)
            with sf.SoundFile(part, "r+") as wav:
                wav.seek(0, sf.SEEK_END)
                wav.write(samples)
        else:
            sf.write(part, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
