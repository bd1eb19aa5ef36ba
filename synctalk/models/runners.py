"""Where the U-Net runs: eager torch (CUDA, fp16) or ONNX Runtime (the CPU default).

Every runner takes and returns NumPy float32: image [B,6,320,320] and audio [B,*audio_shape]
in, [B,3,320,320] in (0, 1) out, B dynamic. The model is loaded once per runner. The torch
runner also takes device tensors (`run_tensor`), which the resident GPU renderer uses.
`synctalk.models.runner_factory` picks and builds the runner a config asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from synctalk.log import get_logger
from synctalk.models.unet import IMAGE_SHAPE, UNet328

log = get_logger("synctalk.models.runners")


@runtime_checkable
class UNetRunner(Protocol):
    """A loaded U-Net: image [B,6,320,320] + audio [B,*audio_shape] -> [B,3,320,320]."""

    audio_shape: tuple[int, ...]
    backend: str  # "torch" or "onnxruntime"
    precision: str  # "fp32", "fp16" or "int8"

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray: ...


def check_inputs(image: np.ndarray, audio: np.ndarray,
                 audio_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float32 views of the inputs; ValueError naming the bad shape."""
    if image.ndim != 4 or tuple(image.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"image: expected [B,{','.join(map(str, IMAGE_SHAPE))}], "
                         f"got {list(image.shape)}")
    if audio.ndim != 1 + len(audio_shape) or tuple(audio.shape[1:]) != audio_shape:
        raise ValueError(f"audio: expected [B,{','.join(map(str, audio_shape))}], "
                         f"got {list(audio.shape)}")
    if image.shape[0] != audio.shape[0]:
        raise ValueError(f"batch mismatch: image {image.shape[0]}, audio {audio.shape[0]}")
    return (np.ascontiguousarray(image, np.float32), np.ascontiguousarray(audio, np.float32))


class TorchUNetRunner:
    """The module on its device under inference_mode; fp16 (or bf16) and channels-last on
    CUDA, with cuDNN's autotuner on. `run_tensor` keeps inputs and outputs on the device (the
    resident renderer); `__call__` is the host-array interface. `compile_for` compiles the
    module for given batch sizes within a time budget, largest first (the sizes a loaded
    replica runs); a batch is then padded up to the smallest compiled size that holds it
    when that is at most twice the batch, and runs eager otherwise."""

    backend = "torch"

    def __init__(self, model: UNet328, device: str = "cpu", fp16: bool = False,
                 bf16: bool = False) -> None:
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
        self.precision = "bf16" if bf16 else "fp16" if fp16 else "fp32"
        on_cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if on_cuda else torch.contiguous_format
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # one algorithm search per input shape
        self.model = model.to(self.device, self.dtype, memory_format=self.memory_format).eval()
        self.audio_shape = tuple(model.audio_shape)
        self.compiled_sizes: tuple[int, ...] = ()
        self._compiled: Callable[..., torch.Tensor] | None = None

    def run_tensor(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """[B,6,320,320] + [B,*audio_shape] on any device -> [B,3,320,320] on the runner's
        device in its dtype (no host copy when the inputs are already there)."""
        if image.ndim != 4 or tuple(image.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"image: expected [B,{','.join(map(str, IMAGE_SHAPE))}], "
                             f"got {list(image.shape)}")
        if tuple(audio.shape) != (image.shape[0], *self.audio_shape):
            raise ValueError(f"audio: expected [{image.shape[0]},"
                             f"{','.join(map(str, self.audio_shape))}], got {list(audio.shape)}")
        batch = int(image.shape[0])
        with torch.inference_mode():
            x = image.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            a = audio.to(self.device, self.dtype)
            size = next((s for s in self.compiled_sizes if s >= batch), None)
            if size is None or size > 2 * batch or self._compiled is None:
                return self.model(x, a)
            if size > batch:
                x = torch.cat([x, x.new_zeros((size - batch, *x.shape[1:]))]).contiguous(
                    memory_format=self.memory_format)
                a = torch.cat([a, a.new_zeros((size - batch, *a.shape[1:]))])
            return self._compiled(x, a)[:batch]

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        image, audio = check_inputs(image, audio, self.audio_shape)
        y = self.run_tensor(torch.from_numpy(image), torch.from_numpy(audio))
        return y.float().cpu().numpy()

    def compile_for(self, sizes: Sequence[int], budget_s: float,
                    compile_fn: Callable[..., Any] | None = None) -> tuple[int, ...]:
        """Compile for `sizes` (largest first) and warm each one; no size starts after
        `budget_s`. Any failure drops back to eager (logged). Returns the compiled sizes,
        ascending."""
        started = time.perf_counter()
        wanted = sorted({int(s) for s in sizes if int(s) >= 1}, reverse=True)
        done: list[int] = []
        try:
            _raise_recompile_limit(len(wanted) + 2)
            compiled = (compile_fn or torch.compile)(self.model, dynamic=False)
            for size in wanted:
                if time.perf_counter() - started > budget_s:
                    log.warning("unet.compile_budget_spent", budget_s=budget_s, compiled=done,
                                left=[s for s in wanted if s not in done])
                    break
                with torch.inference_mode():
                    x = torch.zeros((size, *IMAGE_SHAPE), dtype=self.dtype, device=self.device)
                    a = torch.zeros((size, *self.audio_shape), dtype=self.dtype,
                                    device=self.device)
                    compiled(x.contiguous(memory_format=self.memory_format), a)
                done.append(size)
        except Exception as exc:  # inductor missing, a compiler error, an OOM: stay eager
            log.warning("unet.compile_failed_eager", error=f"{type(exc).__name__}: {exc}",
                        seconds=round(time.perf_counter() - started, 1))
            self._compiled, self.compiled_sizes = None, ()
            return ()
        self._compiled = compiled if done else None
        self.compiled_sizes = tuple(sorted(done))
        log.info("unet.compiled", sizes=done, seconds=round(time.perf_counter() - started, 1))
        return self.compiled_sizes


def _raise_recompile_limit(limit: int) -> None:
    """One compiled graph per batch size: let dynamo keep them all (the knob was renamed)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


def ort_session(model: bytes, threads: int = 0, providers: Sequence[str] | None = None,
                spin: bool = False) -> Any:
    """An ONNX Runtime session with every graph optimisation (BN folding, conv+activation
    fusion, the NCHWc layout for fp32 and NHWC for int8 convs) and denormals flushed.

    Worker threads sleep between operators instead of spinning: on a CPU shared with
    feature extraction, JPEG encoding and other streams, spinning threads took the cores
    from the rest (2 threads ran at 2.9 frames/s spinning, 3.8 sleeping, under load 6)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(model, options,
                                providers=list(providers or ["CPUExecutionProvider"]))


class OrtUNetRunner:
    """An exported U-Net (fp32 or int8 ONNX) in ONNX Runtime."""

    backend = "onnxruntime"

    def __init__(self, model: bytes, audio_shape: tuple[int, ...], precision: str = "fp32",
                 threads: int = 0, providers: Sequence[str] | None = None) -> None:
        from synctalk.models.onnx_export import UNET_INPUTS, UNET_OUTPUT

        self.session = ort_session(model, threads, providers)
        self._inputs, self._output = UNET_INPUTS, UNET_OUTPUT
        self.audio_shape = tuple(audio_shape)
        self.precision = precision

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        image, audio = check_inputs(image, audio, self.audio_shape)
        return self.session.run([self._output], {self._inputs[0]: image,
                                                 self._inputs[1]: audio})[0]


def warmup(runner: UNetRunner, batch: int = 1) -> None:
    """One call, so the first real frame does not pay for lazy allocation and kernel choice."""
    runner(np.zeros((batch, *IMAGE_SHAPE), np.float32),
           np.zeros((batch, *runner.audio_shape), np.float32))
