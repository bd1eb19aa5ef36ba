"""`synctalk infer` on a tiny real avatar: the MP4 it writes (frame count, rate, audio
length), frames identical to the Renderer service's for the same audio, and clear errors
with a non-zero exit and no file left behind."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from services.renderer.server import build_server, build_servicer
from synctalk.audio.levels import frame_levels
from synctalk.commands import infer as infer_cmd
from synctalk.config import ModelsConfig, load_settings
from synctalk.features import get_extractor
from synctalk.render.encode import decode_raw_rgb
from synctalk.rpc.channel import dial
from synctalk.rpc.gen.lipsync.v1 import common_pb2, renderer_pb2, renderer_pb2_grpc
from tests.support.avatars import avatar_store, speech_with_pauses

SECONDS = 2.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return avatar_store(tmp_path_factory.mktemp("avatars"), "odd", num_frames=5, height=171,
                        width=203, seed=2)


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "hello.wav"
    sf.write(path, speech_with_pauses(SECONDS), 16000, subtype="PCM_16")
    return path


def models(store: Path) -> ModelsConfig:
    return ModelsConfig(device="cpu", avatars_dir=str(store))


def read_mp4(path: Path) -> tuple[int, float, tuple[int, int], float, float]:
    """(video frames decoded, frame rate, size, audio stream duration s, audio start s)."""
    with av.open(str(path)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        rate = float(video.average_rate)
        size = (video.width, video.height)
        audio_s = float(audio.duration * audio.time_base)
        start_s = float((audio.start_time or 0) * audio.time_base)
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert video.codec_context.pix_fmt == "yuv420p"
        frames = sum(1 for _ in c.decode(video=0))
    return frames, rate, size, audio_s, start_s


def test_infer_writes_a_playable_mp4(store: Path, wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "tiny_hello.mp4"
    result = infer_cmd.infer("tiny", wav, models(store), out, batch_size=4, progress=False)
    frames, rate, size, audio_s, start_s = read_mp4(out)
    assert result.out == out and result.frames == frames == int(np.ceil(SECONDS * 25)) == 50
    assert rate == 25.0 and size == (256, 256)
    assert abs(audio_s - SECONDS) <= 0.040 and start_s == 0.0
    assert 0 < result.idle_frames < frames
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny_hello.mp4"]  # no temp left


def test_infer_crop_only_and_odd_sizes(store: Path, wav: Path, tmp_path: Path) -> None:
    crop = infer_cmd.infer("tiny", wav, models(store), tmp_path / "c.mp4", crop_only=True,
                           progress=False)
    odd = infer_cmd.infer("odd", wav, models(store), tmp_path / "o.mp4", start_frame=3,
                          progress=False)
    assert read_mp4(crop.out)[2] == (328, 328)
    frames, _, size, _, _ = read_mp4(odd.out)
    assert frames == 50 and size == (204, 172)  # yuv420p needs even sides: one edge row/column


def test_infer_frames_equal_the_render_service_frames(store: Path, wav: Path,
                                                      tmp_path: Path) -> None:
    captured: dict[int, np.ndarray] = {}
    infer_cmd.infer("tiny", wav, models(store), tmp_path / "x.mp4", batch_size=8, start_frame=4,
                    progress=False, on_frame=lambda i, img: captured.__setitem__(i, img.copy()))

    audio = sf.read(wav, dtype="float32")[0]
    features = get_extractor("ave", models(store)).extract(audio)
    rms, voiced = frame_levels(audio)
    cfg = load_settings(models={"device": "cpu", "avatars_dir": str(store)},
                        renderer={"batch_size": 8})

    async def stream():
        yield renderer_pb2.RenderRequest(config=renderer_pb2.RenderConfig(
            avatar="tiny", encoding=common_pb2.IMAGE_ENCODING_RAW_RGB, start_frame=4))
        for i, x in enumerate(features):
            yield renderer_pb2.RenderRequest(frame=common_pb2.FeatureFrame(
                index=i, pts_ms=40 * i, mode="ave", rms=float(rms[i]), voiced=bool(voiced[i]),
                features=common_pb2.Tensor(data=x.astype("<f4").tobytes(), shape=list(x.shape),
                                           dtype=common_pb2.DTYPE_FLOAT32)))

    async def main():
        server = build_server(cfg, "127.0.0.1", 0, build_servicer(cfg))
        await server.start()
        try:
            async with dial(server.address) as channel:
                stub = renderer_pb2_grpc.RendererStub(channel)
                return [f async for f in stub.Render(stream(), timeout=120)]
        finally:
            await server.drain_and_stop()

    served = asyncio.run(main())
    assert len(served) == len(captured) == 50
    for f in served:
        assert np.array_equal(decode_raw_rgb(f.data, f.width, f.height), captured[f.index]), f.index


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="synctalk")
    infer_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["infer", *argv])
    return args.func(args)


def test_cli_errors_exit_non_zero_and_leave_nothing(store: Path, wav: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SYNCTALK_MODELS__AVATARS_DIR", str(store))
    monkeypatch.setenv("SYNCTALK_MODELS__DEVICE", "cpu")
    out_dir = tmp_path / "result"
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    cases = [
        (["--name", "nobody", "--audio", str(wav)], "no such avatar"),
        (["--name", "tiny", "--audio", str(tmp_path / "missing.wav")], "no such file"),
        (["--name", "tiny", "--audio", str(not_audio)], "cannot decode"),
        (["--name", "tiny", "--audio", str(wav), "--feature-mode", "whisper"],
         "no U-Net for feature mode 'whisper'"),
        (["--name", "tiny", "--audio", str(wav), "--start-frame", "12"], "--start-frame"),
    ]
    for argv, message in cases:
        code = cli(*argv, "--out", str(out_dir / "x.mp4"), "--no-progress")
        err = capsys.readouterr().err
        assert code == 2 and message in err, (argv, err)
        assert not out_dir.exists() or not any(out_dir.iterdir())
    monkeypatch.chdir(tmp_path)  # the default output is result/<NAME>_<audio stem>.mp4
    assert cli("--name", "tiny", "--audio", str(wav), "--no-progress") == 0
    assert "real-time factor" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["tiny_hello.mp4"]


def test_the_cli_on_the_bundled_demo_avatar_with_10_s_of_speech(tmp_path: Path) -> None:
    """The acceptance command as a user types it: `synctalk infer --name demo --audio` a 10 s
    piper WAV at 22,050 Hz -> 250 frames at 25 fps with 10 s ± 40 ms of audio from 0."""
    import os
    import subprocess
    import sys

    from training.synthetic.speech import speak

    speech = speak("The weather today is mild, with a light breeze from the west. Later "
                   "this evening, clouds will gather over the hills.", seconds=10.0)
    wav_path = tmp_path / "ten.wav"
    sf.write(wav_path, speech.audio, speech.sample_rate, subtype="PCM_16")
    out = tmp_path / "result" / "demo_ten.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "synctalk", "infer", "--name", "demo", "--audio", str(wav_path),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SYNCTALK_MODELS__DEVICE": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, rate, size, audio_s, start_s = read_mp4(out)
    assert frames == 250 and rate == 25.0 and size == (512, 512)
    assert abs(audio_s - 10.0) <= 0.040 and start_s == 0.0
