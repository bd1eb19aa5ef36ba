"""The AVE audio encoder: the Wav2Lip-style conv stack SyncTalk_2D conditions its U-Net on.

One [1, 80, 16] log-mel window (80 mels x 16 frames = 200 ms) becomes 512 non-negative
values. The layer layout and parameter names match SyncTalk_2D's `audio_visual_encoder.pth`
so such a checkpoint loads unchanged (its keys lack the `audio_encoder.` prefix; both forms
are accepted).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from synctalk.models.conv_stages import ConvSpec, Stride, stage

PREFIX = "audio_encoder."
WINDOW_SHAPE = (1, 80, 16)
FEATURE_DIM = 512

# Wav2Lip SyncNet_color's audio tower.
_LAYERS: tuple[ConvSpec, ...] = (
    *stage(1, 32, 3, 1, 1, residuals=2),
    *stage(32, 64, 3, (3, 1), 1, residuals=2),
    *stage(64, 128, 3, 3, 1, residuals=2),
    *stage(128, 256, 3, (3, 2), 1, residuals=1),
    *stage(256, 512, 3, 1, 0),
    *stage(512, 512, 1, 1, 0),
)


class ConvBlock(nn.Module):
    """Conv + BatchNorm, optional identity residual, then ReLU (names as in Wav2Lip: `conv_block`)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: Stride, padding: int,
        residual: bool,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout)
        )
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class AudioEncoder(nn.Module):
    """[B, 1, 80, 16] mel windows -> [B, 512] features."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(*(ConvBlock(*spec) for spec in _LAYERS))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.audio_encoder(mel).flatten(1)


def normalize_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept SyncTalk_2D's raw keys (`0.conv_block.0.weight`) and prefixed ones alike."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        out[key if key.startswith(PREFIX) else PREFIX + key] = value
    return out


def load_audio_encoder(checkpoint: str | Path) -> AudioEncoder:
    """Build the encoder from a checkpoint file (weights_only), in eval mode, on the CPU.

    Raises ValueError naming the missing/unexpected keys when the file is not an AVE encoder.
    """
    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{checkpoint}: not a state dict")
    model = AudioEncoder()
    result = model.load_state_dict(normalize_state_dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint}: not an AVE audio encoder checkpoint "
            f"(missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]})"
        )
    return model.eval()


def seeded_audio_encoder(seed: int = 0) -> AudioEncoder:
    """A deterministic, untrained encoder (same weights in every process) for use before weights exist."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AudioEncoder()
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()
