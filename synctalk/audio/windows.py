"""Video-frame bookkeeping shared by the extractors: frame counts, SyncTalk_2D's mel windows,
and the 16-row context each frame gets.

Index rules (AVE mode, SyncTalk_2D's exact arithmetic):
- mel window j starts at mel frame int(80 * j / 25), clamped to the last 16 frames;
- feature row 0 repeats window 0 and row r >= 1 is window r - 1 (SyncTalk_2D prepends and
  appends one duplicate row; with clamped starts every row past its N+2 equals its last row);
- video frame i reads rows i-8 .. i+7, zeros outside [0, frame_count).

A look-ahead trim t (live input, to cut latency) leaves out a frame's last t rows: they read
as zeros, as rows past the end of a stream do, so frame i needs audio up to row i+7-t only.
"""

from __future__ import annotations

import numpy as np

from synctalk.audio.pcm import FPS, SAMPLES_PER_FRAME

CONTEXT_BEFORE = 8  # rows before the frame's own row
CONTEXT_AFTER = 7  # rows after it
CONTEXT_ROWS = CONTEXT_BEFORE + 1 + CONTEXT_AFTER  # 16
MEL_WINDOW = 16  # Wav2Lip mel frames per AVE window (200 ms)
MEL_FPS = 80  # Wav2Lip mel frames per second
MAX_TRIM = CONTEXT_AFTER  # a trim may leave out every row after the frame's own


def frame_count(n_samples: int) -> int:
    """Video frames for a stream of n samples: ceil(n / 640) (the last frame may be partial)."""
    return -(-n_samples // SAMPLES_PER_FRAME)


def window_start(j: int) -> int:
    """Unclamped first mel frame of AVE window j, exactly as SyncTalk_2D computes it."""
    return int(MEL_FPS * (j / float(FPS)))


def clamped_window_start(j: int, n_mel: int) -> int:
    """Window j's first mel frame once the stream's mel length is known."""
    return max(0, min(window_start(j), n_mel - MEL_WINDOW))


def synctalk_window_count(n_mel: int) -> int:
    """N, the number of windows SyncTalk_2D encodes (it renders N + 2 frames)."""
    return int((n_mel - MEL_WINDOW) / MEL_FPS * FPS) + 2


def row_window(row: int) -> int:
    """The AVE window behind feature row `row` (row 0 duplicates window 0)."""
    return max(row - 1, 0)


def check_trim(trim: int) -> int:
    if not 0 <= trim <= MAX_TRIM:
        raise ValueError(f"look-ahead trim {trim}: must be 0 to {MAX_TRIM} rows")
    return trim


def context_rows(i: int, trim: int = 0) -> range:
    """Feature rows video frame i reads (the first 16 - trim of its context; the rest are 0)."""
    return range(i - CONTEXT_BEFORE, i + CONTEXT_AFTER + 1 - trim)


def stack_context(rows: np.ndarray, i: int, trim: int = 0) -> np.ndarray:
    """Rows i-8 .. i+7-trim of a [F, ...] feature array, zeros outside [0, F) and for the
    trimmed rows, as [16, ...]."""
    out = np.zeros((CONTEXT_ROWS, *rows.shape[1:]), dtype=np.float32)
    lo, hi = max(i - CONTEXT_BEFORE, 0), min(i + CONTEXT_AFTER + 1 - trim, rows.shape[0])
    if hi > lo:
        out[lo - (i - CONTEXT_BEFORE) : hi - (i - CONTEXT_BEFORE)] = rows[lo:hi]
    return out
