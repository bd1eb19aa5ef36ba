"""Hot-path image kernels: crop/resize/mask for the U-Net input and feathered paste-back.

`crop_mask` and `paste_back` here are the CPU path (NumPy arrays); `select_backend()` returns
the CUDA twins when a GPU really works. See docs/kernels.md.
"""

from kernels.cpu import crop_mask, paste_back
from kernels.reference import CROP, DEFAULT_FEATHER, MASK_COLS, MASK_ROWS, RING, WINDOW
from kernels.select import select_backend

__all__ = [
    "CROP",
    "DEFAULT_FEATHER",
    "MASK_COLS",
    "MASK_ROWS",
    "RING",
    "WINDOW",
    "crop_mask",
    "paste_back",
    "select_backend",
]
