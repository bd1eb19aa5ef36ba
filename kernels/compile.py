"""Compile every kernels/*.cu to PTX, so CI catches a broken kernel on machines without a GPU.

`python -m kernels.compile [--check] [--arch sm_80 sm_90] [--compiler auto|nvcc|nvrtc] [--out DIR] [FILES]`

nvcc is used when it is on PATH; otherwise NVRTC through CuPy's low-level bindings, which
work without a device once `nvidia-cuda-nvrtc-cu12` is installed (CuPy's high-level
`compile_using_nvrtc` queries the device first and fails here). Any compiler error exits
non-zero with the compiler's message. `--check` compiles without keeping the PTX.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
DEFAULT_ARCHS = ("sm_80", "sm_90")
DEFAULT_OUT = KERNEL_DIR.parent / "build" / "kernels"
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


class CompileError(RuntimeError):
    """A kernel failed to compile; the message is the compiler's."""


@dataclass(frozen=True)
class Compiled:
    source: Path
    arch: str
    compiler: str
    ptx: str


def kernel_sources(directory: Path = KERNEL_DIR) -> list[Path]:
    return sorted(directory.glob("*.cu"))


def expand_source(path: Path, seen: frozenset[Path] = frozenset()) -> str:
    """The source with local `#include "x"` lines inlined, `#line` directives keeping the
    compiler's file names and line numbers right. NVRTC and CuPy's cache then see the whole
    program text, so an edit to an included file is never served from a stale cache."""
    path = path.resolve()
    if path in seen:
        return ""
    out: list[str] = [f'#line 1 "{path.name}"']
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        m = _INCLUDE.match(line)
        if m and (path.parent / m.group(1)).is_file():
            out.append(expand_source(path.parent / m.group(1), seen | {path}))
            out.append(f'#line {n + 1} "{path.name}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def nvrtc_module():
    """CuPy's low-level NVRTC bindings, or None when CuPy or libnvrtc is missing."""
    try:
        import cupy.cuda

        nvrtc = cupy.cuda.nvrtc
        nvrtc.getVersion()
    except Exception:
        return None
    return nvrtc


def compile_nvcc(path: Path, arch: str) -> str:
    nvcc = nvcc_path()
    if nvcc is None:
        raise CompileError("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / f"{path.stem}.ptx"
        proc = subprocess.run(
            [nvcc, "-ptx", f"-arch={arch}", "-Werror", "all-warnings", str(path), "-o", str(ptx)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise CompileError(f"nvcc {path.name} ({arch}):\n{proc.stderr.strip()}")
        return ptx.read_text()


def compile_nvrtc(path: Path, arch: str) -> str:
    nvrtc = nvrtc_module()
    if nvrtc is None:
        raise CompileError("NVRTC is unavailable (install nvidia-cuda-nvrtc-cu12 and cupy)")
    prog = nvrtc.createProgram(expand_source(path), path.name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture=compute_{arch.removeprefix('sm_')}"])
        except nvrtc.NVRTCError as e:
            log = nvrtc.getProgramLog(prog).strip()
            raise CompileError(f"nvrtc {path.name} ({arch}): {e}\n{log}") from None
        ptx = nvrtc.getPTX(prog)
        return ptx.decode().rstrip("\0") if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)


def pick_compiler(name: str = "auto") -> str:
    if name != "auto":
        return name
    if nvcc_path():
        return "nvcc"
    if nvrtc_module() is not None:
        return "nvrtc"
    raise CompileError("no CUDA compiler: nvcc is not on PATH and NVRTC is unavailable")


def compile_file(path: Path, arch: str, compiler: str = "auto") -> Compiled:
    chosen = pick_compiler(compiler)
    fn = {"nvcc": compile_nvcc, "nvrtc": compile_nvrtc}[chosen]
    ptx = fn(Path(path), arch)
    if ".entry" not in ptx:
        raise CompileError(f"{chosen} {Path(path).name} ({arch}): the PTX has no kernel entry")
    return Compiled(Path(path), arch, chosen, ptx)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kernels.compile", description=__doc__.split("\n")[0]
    )
    ap.add_argument("files", nargs="*", type=Path, help="default: every kernels/*.cu")
    ap.add_argument("--check", action="store_true", help="compile only; keep no PTX")
    ap.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHS))
    ap.add_argument("--compiler", choices=("auto", "nvcc", "nvrtc"), default="auto")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where PTX goes without --check")
    args = ap.parse_args(argv)
    files = args.files or kernel_sources()
    if not files:
        print("no .cu files found", file=sys.stderr)
        return 2
    failed = False
    for path in files:
        for arch in args.arch:
            try:
                res = compile_file(path, arch, args.compiler)
            except (CompileError, OSError) as e:
                print(f"FAIL {path.name} {arch}\n{e}", file=sys.stderr)
                failed = True
                continue
            entries = re.findall(r"\.entry\s+(\w+)", res.ptx)
            where = ""
            if not args.check:
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / f"{path.stem}.{arch}.ptx"
                target.write_text(res.ptx)
                where = f" -> {target}"
            print(
                f"ok   {path.name} {arch} {res.compiler} {len(res.ptx)} B {', '.join(entries)}{where}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
