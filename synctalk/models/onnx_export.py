"""ONNX export of the U-Net and the AVE audio encoder (dynamic batch, opset 17).

Both use torch's TorchScript exporter (`dynamo=False`), as `synctalk.features.ave_runners`
does: it exports these plain conv nets in well under a second, where the dynamo exporter
takes seconds and needs onnxscript. BatchNorm stays
in the graph: ONNX Runtime folds it into the convolutions when the session loads (and
`quant_pre_process` does before int8 quantisation), so folding it in torch first gains
nothing. Whisper features come from CTranslate2 and are not exported.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from synctalk.models.audio_encoder import WINDOW_SHAPE, AudioEncoder
from synctalk.models.unet import IMAGE_SHAPE, UNet328

OPSET = 17
UNET_INPUTS = ("image", "audio")
UNET_OUTPUT = "output"
ENCODER_INPUT = "mel"
ENCODER_OUTPUT = "features"


def onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: Sequence[str],
               output_names: Sequence[str], dynamic_batch: bool = True) -> bytes:
    """Serialised ONNX of `module` in eval mode, batch axis dynamic unless told otherwise."""
    names = [*input_names, *output_names]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its retirement
            torch.onnx.export(module, example, buffer, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)
    finally:
        module.train(was_training)
    return buffer.getvalue()


def with_metadata(model: bytes, metadata: Mapping[str, str]) -> bytes:
    """`model` with `metadata` set in its metadata_props (what a cached file is checked by)."""
    proto = onnx.load_from_string(model)
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))
    return proto.SerializeToString()


def read_metadata(model: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_from_string(model).metadata_props}


def atomic_write(data: bytes, path: Path) -> None:
    """Write to a temporary file beside `path` and rename it into place (readers never see a
    torn file; concurrent writers each leave a complete one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unet_onnx_bytes(model: UNet328, metadata: Mapping[str, str] | None = None) -> bytes:
    """The U-Net as ONNX: inputs image [B,6,320,320] and audio [B,*audio_shape], output
    [B,3,320,320], all float32, batch dynamic."""
    example = (torch.zeros(1, *IMAGE_SHAPE), torch.zeros(1, *model.audio_shape))
    data = onnx_bytes(model, example, UNET_INPUTS, [UNET_OUTPUT])
    info = {"synctalk.kind": "unet", "synctalk.audio_mode": model.audio_mode,
            "synctalk.width": f"{model.width:g}", **(metadata or {})}
    return with_metadata(data, info)


def export_unet(model: UNet328, path: str | Path,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write the U-Net's ONNX file (atomically) and return its path."""
    path = Path(path)
    atomic_write(unet_onnx_bytes(model, metadata), path)
    return path


def audio_encoder_onnx_bytes(model: AudioEncoder) -> bytes:
    """The AVE encoder as ONNX: mel [B,1,80,16] -> features [B,512], batch dynamic."""
    data = onnx_bytes(model, (torch.zeros(1, *WINDOW_SHAPE),), [ENCODER_INPUT],
                      [ENCODER_OUTPUT])
    return with_metadata(data, {"synctalk.kind": "ave_audio_encoder"})


def export_audio_encoder(model: AudioEncoder, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(audio_encoder_onnx_bytes(model), path)
    return path
