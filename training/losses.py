"""U-Net training losses: L1 + sync (frozen SyncNet) + SSIM, plus VGG19 perceptual on request.

SyncTalk_2D trains with L1 + 0.01 x VGG19 + 10 x sync, with VGG19 downloaded from the
internet at run time. Nothing is downloaded here: the structural term is SSIM (no weights,
written below), and the VGG19 term is added only when the user points at a local torchvision
`vgg19` state dict (`--vgg-weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synctalk.models.syncnet import SyncNet, sync_bce

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# torchvision vgg19 `features` indices 0..14: conv1_1 .. conv3_3 (before its ReLU), as SyncTalk_2D.
_VGG_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256)


def _gaussian_window(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two [B,C,H,W] images in [0, 1] (Gaussian 11x11, sigma 1.5, valid region).

    Always in float32: variances as E[x^2] - E[x]^2 lose too much in half precision."""
    with torch.autocast(a.device.type, enabled=False):
        return _ssim(a.float(), b.float())


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c = a.shape[1]
    w = _gaussian_window(c, a.device, a.dtype)
    mu_a, mu_b = F.conv2d(a, w, groups=c), F.conv2d(b, w, groups=c)
    var_a = F.conv2d(a * a, w, groups=c) - mu_a**2
    var_b = F.conv2d(b * b, w, groups=c) - mu_b**2
    cov = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).mean()


class VGG19Features(nn.Module):
    """torchvision's `vgg19().features[:15]` with the same parameter names (`features.N.*`),
    so a torchvision state dict loads into it without torchvision installed."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(item)
        self.features = nn.Sequential(*layers[:-1])  # stop at conv3_3, before its ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_vgg19(path: str | Path) -> VGG19Features:
    """A frozen VGG19 feature stack from a local torchvision `vgg19` state dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    model = VGG19Features()
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path}: not a torchvision vgg19 state dict (missing {missing[:3]})")
    model.load_state_dict({k: state[k] for k in wanted})
    return model.eval().requires_grad_(False)


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    sync: float = 10.0
    ssim: float = 0.2
    vgg: float = 0.01


class UNetLoss(nn.Module):
    """total = l1 x L1 + sync x BCE(SyncNet(pred, audio), 1) + ssim x (1 - SSIM) + vgg x MSE(VGG).

    The SyncNet and VGG are frozen and kept in eval mode whatever mode the caller puts this
    module in (their BatchNorm statistics must not drift towards the generator's outputs).
    """

    def __init__(self, weights: LossWeights, syncnet: SyncNet | None = None,
                 vgg: VGG19Features | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.syncnet = syncnet.eval().requires_grad_(False) if syncnet is not None else None
        self.vgg = vgg.eval().requires_grad_(False) if vgg is not None else None

    def train(self, mode: bool = True) -> UNetLoss:
        super().train(mode)
        for frozen in (self.syncnet, self.vgg):
            if frozen is not None:
                frozen.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        l1 = F.l1_loss(pred.float(), target.float())
        total = w.l1 * l1
        parts = {"l1": l1.item()}
        if w.ssim:
            structural = 1 - ssim(pred, target)
            total = total + w.ssim * structural
            parts["ssim"] = structural.item()
        if self.syncnet is not None and w.sync:
            prob = self.syncnet(pred, audio)
            sync = sync_bce(prob, torch.ones_like(prob))
            total = total + w.sync * sync
            parts["sync"] = sync.item()
        if self.vgg is not None and w.vgg:
            perceptual = F.mse_loss(self.vgg(pred).float(), self.vgg(target).float().detach())
            total = total + w.vgg * perceptual
            parts["vgg"] = perceptual.item()
        parts["loss"] = total.item()
        return total, parts
