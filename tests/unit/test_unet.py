"""The U-Net: SyncTalk_2D's exact parameter layout, shapes per mode and width, checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synctalk.models.audio_encoder import AudioEncoder
from synctalk.models.unet import (
    MIN_CHANNELS,
    UNet328,
    count_parameters,
    load_unet,
    scaled_channels,
)
from tests.support.paths import ROOT

MANIFEST = ROOT.parent / "shared" / "reference" / \
    "unet328_ave_state_dict.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip("shared/reference/unet328_ave_state_dict.json is not beside the repository")
    return json.loads(MANIFEST.read_text())


def state_from_manifest(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors with exactly the manifest's names and shapes, as a SyncTalk_2D file holds."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in keys.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000, dtype=torch.int64)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.1
    return state


def images(batch: int, mode: str = "ave") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    audio_shape = (32, 16, 16) if mode == "ave" else (32, 16, 24)
    return torch.rand(batch, 6, 320, 320, generator=g), torch.rand(batch, *audio_shape,
                                                                   generator=g)


def test_synctalk2d_state_dict_loads_strictly_and_runs() -> None:
    spec = manifest()
    model = UNet328("ave", 1.0)
    own = model.state_dict()
    assert list(own) == list(spec["keys"])  # names, and SyncTalk_2D's order
    assert {k: list(v.shape) for k, v in own.items()} == spec["keys"]
    assert len(own) == 556
    assert count_parameters(model) == spec["parameters"] == 12_186_935
    model.load_state_dict(state_from_manifest(spec["keys"]), strict=True)
    model.eval()
    with torch.inference_mode():
        for batch in (1, 4):
            out = model(*images(batch))
            assert out.shape == (batch, 3, 320, 320)
            assert out.dtype == torch.float32
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_batch_items_are_independent() -> None:
    model = UNet328("ave", 0.125).eval()
    image, audio = images(3)
    with torch.inference_mode():
        together = model(image, audio)
        alone = model(image[1:2], audio[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)


def test_width_scales_every_channel_count() -> None:
    assert scaled_channels(1.0) == (32, 64, 128, 256, 512)
    assert scaled_channels(0.25) == (8, 16, 32, 64, 128)
    assert min(scaled_channels(0.01)) == MIN_CHANNELS
    small = UNet328("ave", 0.125)
    assert small.channels == (4, 8, 16, 32, 64)
    assert count_parameters(small) < count_parameters(UNet328("ave", 0.25)) < 12_186_935
    with torch.inference_mode():
        assert small.eval()(*images(2)).shape == (2, 3, 320, 320)
    with pytest.raises(ValueError, match="width"):
        UNet328("ave", 0.0)


def test_whisper_mode_has_its_own_audio_branch() -> None:
    model = UNet328("whisper", 0.25).eval()
    assert model.audio_shape == (32, 16, 24)
    with torch.inference_mode():
        assert model(*images(2, "whisper")).shape == (2, 3, 320, 320)
        with pytest.raises(RuntimeError):
            model(*images(1, "ave"))  # the ave window does not reach 10x10 in this branch
    ave = UNet328("ave", 0.25).state_dict()
    whisper = model.state_dict()
    assert ave.keys() == whisper.keys()
    differs = [k for k in ave if ave[k].shape != whisper[k].shape]
    assert differs == ["audio_model.conv5.weight"]
    with pytest.raises(ValueError, match="unknown audio mode"):
        UNet328("hubert")


def project_checkpoint(model: UNet328, config: dict) -> dict:
    """What training/checkpoints.inference_state writes for a U-Net."""
    return {"format": "synctalk.train/1", "kind": "unet", "model": model.state_dict(),
            "feature_mode": model.audio_mode, "config": config, "epoch": 3, "step": 30,
            "metrics": {"loss": 0.1}, "syncnet": ""}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("mode", "width", "config"), [
    ("whisper", 0.25, {"unet": {"audio_mode": "whisper"}}),  # width inferred from shapes
    ("ave", 0.1, {"unet": {"audio_mode": "ave", "width": 0.1}}),
    ("ave", 0.1, {}),  # a width whose first layers hit the channel floor, inferred
])
def test_load_unet_project_checkpoint(tmp_path: Path, mode: str, width: float,
                                      config: dict) -> None:
    torch.manual_seed(1)
    model = UNet328(mode, width)
    path = tmp_path / f"unet_{mode}.pt"
    torch.save(project_checkpoint(model, config), path)
    loaded = load_unet(path)
    assert loaded.audio_mode == mode
    assert loaded.channels == model.channels
    assert not loaded.training
    assert same_weights(model, loaded)


def test_load_unet_raw_synctalk2d_state_dict(tmp_path: Path) -> None:
    spec = manifest()
    state = state_from_manifest(spec["keys"], seed=3)
    raw = tmp_path / "195.pth"
    torch.save(state, raw)
    loaded = load_unet(raw)
    assert (loaded.audio_mode, loaded.width) == ("ave", 1.0)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    wrapped = tmp_path / "ddp.pth"  # DDP-saved weights carry a `module.` prefix
    torch.save({f"module.{k}": v for k, v in state.items()}, wrapped)
    assert same_weights(load_unet(wrapped), loaded)


def test_bad_checkpoints_raise_value_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], listing)
    encoder = tmp_path / "audio_visual_encoder.pth"
    torch.save(AudioEncoder().state_dict(), encoder)
    syncnet = tmp_path / "syncnet_ave.pt"
    torch.save({"format": "synctalk.train/1", "kind": "syncnet", "model": {}}, syncnet)
    truncated = tmp_path / "truncated.pt"
    state = UNet328("ave", 0.125).state_dict()
    state.pop("outc.conv.bias")
    torch.save(state, truncated)
    for path, message in ((text, "not a readable torch checkpoint"),
                          (listing, "not a U-Net checkpoint"),
                          (encoder, "not a SyncTalk U-Net checkpoint"),
                          (syncnet, "'syncnet' checkpoint"),
                          (truncated, "missing \\['outc.conv.bias'\\]")):
        with pytest.raises(ValueError, match=message):
            load_unet(path)
    with pytest.raises(FileNotFoundError):
        load_unet(tmp_path / "absent.pt")
