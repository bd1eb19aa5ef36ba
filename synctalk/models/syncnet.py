"""SyncNet: the lip-sync expert that scores whether a mouth crop matches an audio window.

Two towers in the Wav2Lip style (conv + BatchNorm + LeakyReLU blocks, some residual): the
face tower reads one unmasked 3x320x320 crop (BGR, 0-1, as the U-Net produces it), the audio
tower reads the very tensor the U-Net is conditioned on ([32,16,16] for `ave`, [32,16,24] for
`whisper`). Both end in 512x3x3 non-negative maps (a ReLU 1x1 conv), flattened to 4608 values
and L2-normalised, so their cosine lies in [0, 1] and is a probability BCE can take without
the crashes SyncTalk_2D's unbounded cosine causes. `width` scales every channel count; 1.0 is
the full network (about 5 GMAC per pair), smaller widths keep CPU test runs cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synctalk.models.conv_stages import ConvSpec, Stride, stage

AUDIO_SHAPES: dict[str, tuple[int, int, int]] = {"ave": (32, 16, 16), "whisper": (32, 16, 24)}
FACE_SHAPE = (3, 320, 320)
EMBED_GRID = 3
EPS = 1e-6

# Channels in units of the base width (32 at width 1); cin 0 = the tower's input channels.
# The comments give the output side of each stage.
_FACE: tuple[ConvSpec, ...] = (
    *stage(0, 1, 7, 1, 3),  # 320
    *stage(1, 2, 5, 2, 1, residuals=1),  # 159
    *stage(2, 4, 3, 2, 0, residuals=1),  # 79
    *stage(4, 8, 3, 2, 1, residuals=2),  # 40
    *stage(8, 16, 3, 2, 1, residuals=1),  # 20
    *stage(16, 16, 3, 2, 1, residuals=1),  # 10
    *stage(16, 16, 3, 2, 1),  # 5
    *stage(16, 16, 3, 2, 1),  # 3
)
_AUDIO: tuple[ConvSpec, ...] = (
    *stage(0, 2, 3, 1, 1, residuals=1),  # 16
    *stage(2, 4, 3, 1, 1, residuals=1),  # 16
    *stage(4, 8, 3, 2, 2, residuals=1),  # 9
    *stage(8, 16, 3, 2, 1, residuals=1),  # 5
    *stage(16, 16, 3, 2, 1),  # 3 (whisper: 3x4, pooled to 3x3)
)


class ConvBlock(nn.Module):
    """Conv + BatchNorm, optional identity residual, LeakyReLU(0.01)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: Stride, padding: int,
                 residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if self.residual:
            out = out + x
        return F.leaky_relu(out, 0.01)


def _tower(spec: tuple[ConvSpec, ...], in_channels: int,
           base: int, embed: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout, kernel, stride, padding, residual in spec:
        layers.append(ConvBlock(in_channels if cin == 0 else cin * base, cout * base, kernel,
                                stride, padding, residual))
    layers += [nn.AdaptiveAvgPool2d(EMBED_GRID), nn.Conv2d(spec[-1][1] * base, embed, 1),
               nn.ReLU()]
    return nn.Sequential(*layers)


class SyncNet(nn.Module):
    """(face [B,3,320,320], audio [B,*AUDIO_SHAPES[mode]]) -> sync probability [B] in [0, 1]."""

    def __init__(self, audio_mode: str = "ave", width: float = 1.0) -> None:
        super().__init__()
        if audio_mode not in AUDIO_SHAPES:
            raise ValueError(f"unknown audio mode {audio_mode!r} (known: {sorted(AUDIO_SHAPES)})")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.audio_mode = audio_mode
        self.width = width
        base = max(1, round(32 * width))
        embed = max(8, round(512 * width))
        self.face_encoder = _tower(_FACE, FACE_SHAPE[0], base, embed)
        self.audio_encoder = _tower(_AUDIO, AUDIO_SHAPES[audio_mode][0], base, embed)

    def embed_face(self, face: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.face_encoder(face).flatten(1), dim=1, eps=EPS)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_encoder(audio).flatten(1), dim=1, eps=EPS)

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return (self.embed_face(face) * self.embed_audio(audio)).sum(1)


def sync_bce(prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE on SyncNet probabilities, in float32 and clamped: autocast forbids BCE in half
    precision, and a cosine of exactly 0 or 1 would give an infinite loss."""
    with torch.autocast(prob.device.type, enabled=False):
        p = prob.float().clamp(EPS, 1 - EPS)
        return F.binary_cross_entropy(p, label.float().to(p.device))


def syncnet_config(model: SyncNet) -> dict[str, object]:
    """What `build_syncnet` needs to rebuild the same network from a checkpoint."""
    return {"audio_mode": model.audio_mode, "width": model.width}


def build_syncnet(config: dict[str, object]) -> SyncNet:
    return SyncNet(str(config.get("audio_mode", "ave")), float(config.get("width", 1.0)))
