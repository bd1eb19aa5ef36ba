"""The idle loop's geometry: which source frame each loop position shows, and how speech and
idling hand over to each other without a jump.

Between utterances an avatar idles: the head keeps its recorded motion with the mouth closed.
The loop is rendered once per avatar (the U-Net with the silence window, `synctalk.render.idle`)
and then replayed, so idling costs no U-Net time. It walks the first `sources` frames forward
and back (the renderer's ping-pong walk, restricted to them): position k shows source k on the
way out and `period - k` on the way back. `sources` is the whole avatar up to `max_frames / 2
+ 1` frames, so for a short avatar every frame speech can end on is in the loop.

Handing over: speech that starts after loop position k starts its walk at the source that
position's successor would show (`start_after`); idling after speech that ended on source s
resumes at the position that shows the source after s (`resume_after`). Only an avatar longer
than the loop can end speech outside it; idling then resumes at the loop's far end.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_FRAMES = 500  # 20 s at 25 frames/s


@dataclass(frozen=True)
class IdleLoopShape:
    """The loop of an avatar with `num_frames` source frames, at most `max_frames` long."""

    num_frames: int
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.max_frames < 2:
            raise ValueError(f"an idle loop needs max_frames >= 2, got {self.max_frames}")

    @property
    def sources(self) -> int:
        """Source frames the loop walks over: 0 .. sources - 1."""
        return min(self.num_frames, self.max_frames // 2 + 1)

    @property
    def length(self) -> int:
        """Positions in one loop (the walk's period); 1 for a one-frame avatar."""
        return max(1, 2 * (self.sources - 1))

    def source(self, position: int) -> int:
        """The source frame loop position `position` shows (any integer, taken modulo)."""
        k = position % self.length
        return k if k < self.sources else self.length - k

    def start_after(self, position: int) -> int:
        """The walk start (a source frame, walked forward) for speech that follows `position`."""
        return self.source(position + 1)

    def resume_after(self, last_source: int) -> int:
        """The loop position to idle from after speech whose last frame showed `last_source`."""
        if self.sources == 1:
            return 0
        if last_source < 0:
            return 0
        if last_source < self.sources - 1:
            return last_source + 1
        if last_source == self.sources - 1:
            return self.sources % self.length  # on the way back
        return self.sources - 1  # beyond the loop: its far end
