"""The conv tables of the Wav2Lip-style towers (the AVE audio encoder, both SyncNet towers),
written stage by stage: a stage is one conv that changes channels or resolution followed by
residual 3x3 convs that keep both, so only the first conv of a stage needs its numbers."""

from __future__ import annotations

Stride = int | tuple[int, int]
# (cin, cout, kernel, stride, padding, residual): one conv block, as the towers build it.
ConvSpec = tuple[int, int, int, Stride, int, bool]


def stage(cin: int, cout: int, kernel: int, stride: Stride, padding: int,
          residuals: int = 0) -> tuple[ConvSpec, ...]:
    """The conv cin -> cout, then `residuals` 3x3 stride-1 convs at cout with identity residual."""
    return ((cin, cout, kernel, stride, padding, False),
            *((cout, cout, 3, 1, 1, True),) * residuals)
