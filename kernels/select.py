"""Backend choice for the kernels: CUDA only when a device really works, else the CPU path.

`cupy.cuda.is_available()` can be False, and even when it is True the first real device use
can raise CUDARuntimeError (an old driver, a container without the device); the probe
touches the device and compiles the kernels before trusting it, and never crashes.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

from synctalk.log import get_logger

PREFERENCES = ("auto", "cpu", "cuda")
log = get_logger("kernels.select")


def cuda_status() -> tuple[bool, str]:
    """(usable, why): whether the CUDA kernels can run on this machine right now."""
    try:
        import cupy
    except Exception as e:
        return False, f"cupy is not importable: {e}"
    try:
        if not cupy.cuda.is_available():
            return False, "cupy.cuda.is_available() is False"
        count = cupy.cuda.runtime.getDeviceCount()
        probe = cupy.arange(4, dtype=cupy.int32) + 1
        if int(probe.sum().get()) != 10:
            return False, "the device returned a wrong result"
        from kernels import cuda

        cuda.module()
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"
    return True, f"{count} CUDA device(s)"


@cache
def select_backend(prefer: str = "auto") -> ModuleType:
    """`kernels.cuda` or `kernels.cpu` (both offer crop_mask and paste_back).

    prefer="auto" takes CUDA when it works, "cpu" never probes, "cuda" raises RuntimeError
    when no device works. The choice is logged once per preference.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer: expected one of {PREFERENCES}, got {prefer!r}")
    if prefer == "cpu":
        ok, why = False, "cpu asked for"
    else:
        ok, why = cuda_status()
        if not ok and prefer == "cuda":
            raise RuntimeError(f"CUDA kernels asked for, but no working device: {why}")
    if ok:
        from kernels import cuda as backend
    else:
        from kernels import cpu as backend
    log.info("kernels.backend", backend=backend.NAME, prefer=prefer, reason=why)
    return backend
