"""The SyncTalk_2D 328 U-Net, written from its behaviour so SyncTalk_2D checkpoints load unchanged.

Every layer is a MobileNetV2 inverted-residual block (1x1 expand, 3x3 depthwise, 1x1 project,
no biases). Five stride-2 blocks take the 6x320x320 input (reference crop, masked crop; BGR,
0..1) to 512x10x10; an audio branch turns the audio window into another 512x10x10 map that
is concatenated there and fused; five bilinear x2 stages with skip connections climb back to
320x320 and a 1x1 conv + sigmoid gives the 3-channel mouth region. At width 1.0 and mode
`ave` the parameter names and shapes are exactly SyncTalk_2D's (556 tensors, 12,186,935
parameters); `width` scales every channel count for tiny test and CPU demo networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SHAPE = (6, 320, 320)
OUTPUT_SHAPE = (3, 320, 320)
AUDIO_SHAPES: dict[str, tuple[int, int, int]] = {"ave": (32, 16, 16), "whisper": (32, 16, 24)}
BASE_CHANNELS = (32, 64, 128, 256, 512)
MIN_CHANNELS = 4
EXPAND = 2


def scaled_channels(width: float) -> tuple[int, ...]:
    """The five encoder channel counts at `width` (at least MIN_CHANNELS each)."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return tuple(max(MIN_CHANNELS, round(c * width)) for c in BASE_CHANNELS)


class InvertedResidual(nn.Module):
    """1x1 expand + BN + ReLU, 3x3 depthwise (stride s) + BN + ReLU, 1x1 project + BN.

    The Sequential indices (conv.0/1/3/4/6/7) are SyncTalk_2D's parameter names.
    """

    def __init__(self, inp: int, oup: int, stride: int, use_res: bool,
                 expand_ratio: int = EXPAND) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res = use_res
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res else out


class DoubleConvDW(nn.Module):
    """IR(in -> out, stride) then IR(out -> out, residual)."""

    def __init__(self, inp: int, oup: int, stride: int = 1) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(inp, oup, stride, use_res=False),
            InvertedResidual(oup, oup, 1, use_res=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class InConvDw(nn.Module):
    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(inp, oup, 1, use_res=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inconv(x)


class Down(nn.Module):
    """Stride-2 DoubleConvDW (the name `maxpool_conv` is SyncTalk_2D's; there is no pooling)."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(inp, oup, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2 (align_corners), centred zero-pad to the skip's size, concat, DoubleConvDW."""

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.conv = DoubleConvDW(inp, oup, stride=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        dy = skip.shape[2] - x.shape[2]
        dx = skip.shape[3] - x.shape[3]
        if dy or dx:  # only for inputs that are not 320x320 multiples; static under export
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x, skip], dim=1))


class OutConv(nn.Module):
    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inp, oup, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AudioBranch(nn.Module):
    """Audio window -> c4 x 10 x 10 (SyncTalk_2D's `AudioConvAve` layout).

    `ave` [32,16,16]: the last plain conv is 3x3 stride 2 padding 3 (16 -> 10). `whisper`
    [32,16,24]: the same layers, that conv is 3x5 with padding (3, 0), so 16x24 -> 10x10.
    """

    def __init__(self, mode: str, ch: tuple[int, ...]) -> None:
        super().__init__()
        c1, c2, c3, c4 = ch[1:]
        in_ch = AUDIO_SHAPES[mode][0]
        kernel5, pad5 = ((3, 3), (3, 3)) if mode == "ave" else ((3, 5), (3, 0))
        self.conv1 = InvertedResidual(in_ch, c1, 1, use_res=False)
        self.conv2 = InvertedResidual(c1, c2, 1, use_res=False)
        self.conv3 = nn.Conv2d(c2, c3, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(c3)
        self.conv4 = InvertedResidual(c3, c3, 1, use_res=True)
        self.conv5 = nn.Conv2d(c3, c4, kernel5, 2, pad5)
        self.bn5 = nn.BatchNorm2d(c4)
        self.relu = nn.ReLU()
        self.conv6 = InvertedResidual(c4, c4, 1, use_res=True)
        self.conv7 = InvertedResidual(c4, c4, 1, use_res=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = self.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = self.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


class UNet328(nn.Module):
    """image [B,6,320,320] + audio [B,*AUDIO_SHAPES[mode]] -> [B,3,320,320] in (0, 1)."""

    def __init__(self, audio_mode: str = "ave", width: float = 1.0) -> None:
        super().__init__()
        if audio_mode not in AUDIO_SHAPES:
            raise ValueError(f"unknown audio mode {audio_mode!r} "
                             f"(known: {', '.join(AUDIO_SHAPES)})")
        ch = scaled_channels(width)
        c0, c1, c2, c3, c4 = ch
        self.audio_mode = audio_mode
        self.width = float(width)
        self.channels = ch
        self.audio_shape = AUDIO_SHAPES[audio_mode]
        # Registration order = SyncTalk_2D's state-dict key order.
        self.audio_model = AudioBranch(audio_mode, ch)
        self.fuse_conv = nn.Sequential(DoubleConvDW(2 * c4, c4), DoubleConvDW(c4, c3))
        self.inc = InConvDw(IMAGE_SHAPE[0], c0)
        self.down1 = Down(c0, c0)
        self.down2 = Down(c0, c1)
        self.down3 = Down(c1, c2)
        self.down4 = Down(c2, c3)
        self.down5 = Down(c3, c4)
        half = max(MIN_CHANNELS, c0 // 2)
        self.up1 = Up(2 * c3, c2)
        self.up2 = Up(2 * c2, c1)
        self.up3 = Up(2 * c1, c0)
        self.up4 = Up(2 * c0, c0)
        self.up5 = Up(2 * c0, half)
        self.outc = OutConv(half, OUTPUT_SHAPE[0])

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(image)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x6 = self.down5(x5)
        x = self.fuse_conv(torch.cat([x6, self.audio_model(audio)], dim=1))
        x = self.up1(x, x5)
        x = self.up2(x, x4)
        x = self.up3(x, x3)
        x = self.up4(x, x2)
        x = self.up5(x, x1)
        return torch.sigmoid(self.outc(x))

    def describe(self) -> dict[str, Any]:
        """What `load_unet` needs to rebuild this network (saved in project checkpoints)."""
        return {"audio_mode": self.audio_mode, "width": self.width}


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """DDP / torch.compile wrappers prefix every key; SyncTalk_2D files have no prefix."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _infer_mode(state: Mapping[str, Any]) -> str:
    weight = state.get("audio_model.conv5.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ValueError("no audio_model.conv5.weight")
    return "whisper" if tuple(weight.shape[2:]) == (3, 5) else "ave"


def _width_candidates(state: Mapping[str, Any]) -> list[float]:
    """Widths that could have produced these shapes (the min-channel clamp makes c0 ambiguous)."""
    found: list[float] = []
    for key, base in (("down5.maxpool_conv.0.double_conv.0.conv.6.weight", 512),
                      ("down4.maxpool_conv.0.double_conv.0.conv.6.weight", 256),
                      ("inc.inconv.0.conv.6.weight", 32)):
        weight = state.get(key)
        if isinstance(weight, torch.Tensor) and weight.ndim == 4:
            width = weight.shape[0] / base
            if width not in found:
                found.append(width)
    if not found:
        raise ValueError("no encoder weights (inc/down4/down5)")
    return found


def _shapes_match(model: nn.Module, state: Mapping[str, Any]) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(
        tuple(own[k].shape) == tuple(v.shape) for k, v in state.items())


def unet_from_state_dict(state: Mapping[str, Any], audio_mode: str | None = None,
                         width: float | None = None, source: str = "state dict") -> UNet328:
    """Build the U-Net that fits `state` exactly and load it (strict). ValueError if none does."""
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: not a U-Net state dict (expected a mapping of tensors)")
    state = _strip_prefix(state)
    try:
        mode = audio_mode or _infer_mode(state)
        widths = [width] if width else _width_candidates(state)
    except ValueError as exc:
        raise ValueError(f"{source}: not a SyncTalk U-Net checkpoint ({exc})") from None
    if mode not in AUDIO_SHAPES:
        raise ValueError(f"{source}: unknown audio mode {mode!r}")
    for candidate in widths:
        model = UNet328(mode, candidate)
        if _shapes_match(model, state):
            model.load_state_dict(state, strict=True)
            return model.eval()
    model = UNet328(mode, widths[0])
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())[:3]
    unexpected = sorted(state.keys() - own.keys())[:3]
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape][:3]
    raise ValueError(f"{source}: not a U-Net328 {mode!r} checkpoint at width {widths[0]:g} "
                     f"(missing {missing}, unexpected {unexpected}, wrong shape {wrong})")


def _config_width(config: Any) -> float | None:
    if not isinstance(config, Mapping):
        return None
    for scope in (config, config.get("unet")):
        if isinstance(scope, Mapping) and isinstance(scope.get("width"), int | float):
            return float(scope["width"])
    return None


def read_unet_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None,
                                                     float | None]:
    """(state dict, audio mode or None, width or None) from a project or SyncTalk_2D file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such U-Net checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint"
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: not a U-Net checkpoint (holds a {type(obj).__name__})")
    if "model" in obj and isinstance(obj["model"], Mapping):
        if obj.get("kind", "unet") != "unet":
            raise ValueError(f"{path}: a {obj['kind']!r} checkpoint, not a U-Net")
        config = obj.get("config")
        mode = obj.get("feature_mode")
        if mode is None and isinstance(config, Mapping) and isinstance(config.get("unet"),
                                                                        Mapping):
            mode = config["unet"].get("audio_mode")
        return dict(obj["model"]), mode, _config_width(config)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return dict(obj["state_dict"]), None, None
    return dict(obj), None, None


def load_unet(path: str | Path, device: str | torch.device = "cpu") -> UNet328:
    """The U-Net in a project checkpoint ({"model", "feature_mode", "config"}) or a raw
    SyncTalk_2D state dict, in eval mode on `device`. ValueError when the file is not one."""
    state, mode, width = read_unet_checkpoint(path)
    model = unet_from_state_dict(state, mode, width, source=str(path))
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
