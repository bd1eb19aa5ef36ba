"""Where the AVE encoder runs. Each runner encodes fixed-size groups of mel windows; the group
size is part of the runner because conv results for one window change with the batch size.

- ONNX Runtime on the CPU (the default there): 3x faster than eager torch per window, fast
  enough at batch 1, so its group is 1 and a live stream never recomputes a window.
- torch on CUDA (fp16 when configured): group 8, a GPU batch of 8 costs about what 1 does.
- torch on the CPU (`models.backend = "torch"`): group 4.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from synctalk.config import ModelsConfig
from synctalk.features.device import resolve_device, use_fp16
from synctalk.features.encoder_info import AVE_CHECKPOINT_HINT
from synctalk.log import get_logger
from synctalk.models.audio_encoder import AudioEncoder, load_audio_encoder, seeded_audio_encoder

log = get_logger("synctalk.features.ave")

WINDOW = (80, 16)


class TorchEncoderRunner:
    """The encoder as a torch module on its device, under inference_mode."""

    def __init__(self, model: AudioEncoder, device: str = "cpu", fp16: bool = False,
                 group: int = 4) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.group = group

    def encode_group(self, windows: np.ndarray) -> np.ndarray:
        """[group, 80, 16] -> [group, 512] float32."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(windows, np.float32))
            x = x.to(self.device, self.dtype).unsqueeze(1)
            return self.model(x).float().cpu().numpy()


class OrtEncoderRunner:
    """The encoder exported (in memory, fixed batch = group) and run by ONNX Runtime on the CPU."""

    def __init__(self, model: AudioEncoder, group: int = 1, threads: int = 0) -> None:
        import onnxruntime as ort

        self.model = model.eval()
        self.group = group
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter announces its retirement
            warnings.simplefilter("ignore")
            torch.onnx.export(self.model, (torch.zeros(group, 1, *WINDOW),), buffer,
                              input_names=["mel"], output_names=["features"], dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(buffer.getvalue(), options,
                                            providers=["CPUExecutionProvider"])

    def encode_group(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, np.float32)[:, None]
        return self.session.run(None, {"mel": x})[0]


EncoderRunner = TorchEncoderRunner | OrtEncoderRunner


def load_model(checkpoint: str) -> AudioEncoder:
    """The checkpoint's encoder, or a deterministically seeded one (loudly) when none is set."""
    if checkpoint:
        model = load_audio_encoder(Path(checkpoint))
        log.info("ave.encoder_loaded", checkpoint=checkpoint)
        return model
    log.warning(
        "ave.untrained_encoder",
        reason="models.ave_checkpoint is empty; using a seeded, untrained encoder",
        hint=AVE_CHECKPOINT_HINT,
    )
    return seeded_audio_encoder()


def build_runner(models: ModelsConfig) -> EncoderRunner:
    model = load_model(models.ave_checkpoint)
    device = resolve_device(models)
    if device == "cuda":
        return TorchEncoderRunner(model, "cuda", use_fp16(models, device), group=8)
    if models.backend in ("auto", "onnxruntime"):
        try:
            return OrtEncoderRunner(model, group=1, threads=models.threads)
        except ImportError:
            if models.backend == "onnxruntime":
                raise
            log.warning("ave.onnxruntime_missing", fallback="torch")
    return TorchEncoderRunner(model, "cpu", group=4)
