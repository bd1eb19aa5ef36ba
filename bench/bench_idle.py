"""What idling costs the renderer: the idle loop drawn once, then served from its cache.

    .venv/bin/python -m bench.bench_idle [--avatar demo] [--repeats 5]

A real Renderer on 127.0.0.1 over the bundled avatars (`assets/avatars`, the demo by default):
the first IdleLoop call draws the loop through the U-Net (wall seconds, U-Net frames from the
renderer's own `synctalk_renderer_frames_total`, bytes); the next `--repeats` calls are
served from the cache (median wall ms, U-Net frames: 0 expected). Per frame, the drawing's
cost is set beside the cache's: the ratio is what idling from the cache saves.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from prometheus_client import REGISTRY

from synctalk.config import REPO_ROOT, load_settings
from synctalk.rpc.gen.lipsync.v1 import renderer_pb2


def unet_frames(avatar: str) -> float:
    return REGISTRY.get_sample_value("synctalk_renderer_frames_total", {"avatar": avatar}) or 0.0


async def measure(avatar: str, repeats: int) -> list[tuple[str, float, float, float, int]]:
    from services.renderer.server import build_server, build_servicer
    from synctalk.rpc.channel import dial
    from synctalk.rpc.gen.lipsync.v1 import renderer_pb2_grpc

    settings = load_settings(models={"device": "cpu",
                                     "avatars_dir": str(REPO_ROOT / "assets" / "avatars")})
    servicer = build_servicer(settings)
    server = build_server(settings, "127.0.0.1", 0, servicer)
    await server.start()
    rows = []
    try:
        async with dial(server.address) as channel:
            stub = renderer_pb2_grpc.RendererStub(channel)
            request = renderer_pb2.IdleLoopRequest(avatar=avatar)
            for k in range(repeats + 1):
                before = unet_frames(avatar)
                started = time.perf_counter()
                frames = [f async for f in stub.IdleLoop(request)]
                wall = time.perf_counter() - started
                rows.append(("first (drawn)" if k == 0 else "cached", wall, len(frames),
                             unet_frames(avatar) - before, sum(len(f.data) for f in frames)))
    finally:
        await server.drain_and_stop()
        await servicer.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="demo")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.avatar, args.repeats))
    first, cached = rows[0], rows[1:]
    median = statistics.median(r[1] for r in cached)
    print(f"avatar {args.avatar}: loop of {first[2]} frames, {first[4] / 1e6:.1f} MB")
    print("| call | wall | U-Net frames | ms per loop frame |")
    print("|---|---:|---:|---:|")
    print(f"| first (drawn) | {first[1]:.2f} s | {first[3]:.0f} | {1000 * first[1] / first[2]:.2f} |")
    print(f"| cached (median of {len(cached)}) | {1000 * median:.0f} ms | "
          f"{max(r[3] for r in cached):.0f} | {1000 * median / first[2]:.3f} |")
    print(f"drawing / cached, per frame: {first[1] / median:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
