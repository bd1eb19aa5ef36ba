"""The page's Microphone tab in headless Chromium, with a fake microphone playing a WAV of
speech (Chromium's --use-file-for-fake-audio-capture), against a real stack serving the
bundled demo avatar: the avatar's mouth opening, measured on the painted canvas, follows the
loudness of the speech; the page shows mouth-to-ear latency and dropped frames; Stop and
closing the page end the session (the edge's active sessions back to 0); Start works again
after Stop. Skipped without Chromium or playwright (see tests/integration/test_web_page.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.audio import wav_bytes
from tests.support.browser import ARGS, CHROMIUM, _require_browser, open_page
from tests.support.http import wait_sessions
from tests.support.paths import ROOT
from tests.support.stack import Edge, Stack

DEMO = ROOT / "assets" / "avatars" / "demo"
SPEECH = ["Hello there, I am talking into the microphone.", "And now the avatar speaks with "
          "my voice, in real time.", "Open wide, then quiet."]
GAP_S = 0.7  # silence between the sentences: the mouth should close in them
PAINTED = 80  # frames with speech input to measure (fewer than 25/s when the CPU is short)

# Per painted frame: the dark pixels of a thin column through the mouth (the inner mouth is
# dark, lips and skin are not), as tests/unit/test_synthetic.py measures the opening.
MEASURE = """(truth) => {
    window.painted = [];
    window.synctalk.player.onPaint = (f) => {
        if (f.inputSample === null) return;
        const c = truth[f.sourceFrame];
        const g = f.canvas.getContext('2d');
        const d = g.getImageData(Math.round(c[0]) - 3, Math.round(c[1]) - 5, 7, 50).data;
        let dark = 0;
        for (let row = 0; row < 50; row++) {
            let sum = 0;
            for (let col = 0; col < 7; col++) {
                const i = 4 * (row * 7 + col);
                sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
            }
            if (sum / 7 < 60) dark += 1;
        }
        window.painted.push({dark, rms: f.rms, index: f.index});
    };
}"""


def _wait_active(edge: Edge, n: int) -> None:
    wait_sessions(edge, n, timeout=15, step_s=0.1)


@pytest.fixture(scope="module")
def demo_edge() -> Iterator[Edge]:
    _require_browser()
    root = Path(tempfile.mkdtemp(prefix="web-live-"))
    (root / "avatars").mkdir()
    (root / "avatars" / "demo").symlink_to(DEMO, target_is_directory=True)
    stack = Stack(root)
    try:
        edge = stack.edge()
        with edge.client() as client:  # load the demo avatar's model before the page talks
            assert client.get("/generate", params={"text": "Warm up.", "realtime": "false"}
                              ).status_code == 200
        yield edge
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def speech_wav(demo_edge: Edge, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Piper speech with silent gaps, as the fake microphone's file (it loops)."""
    pieces = []
    with demo_edge.client() as client:
        for sentence in SPEECH:
            reply = client.get("/get-tts-audio", params={"text": sentence})
            assert reply.status_code == 200
            pieces.append(reply.content[44:])
            pieces.append(b"\0\0" * int(GAP_S * 16000))
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    path.write_bytes(wav_bytes(b"".join(pieces)))
    return path


def _launch(p: Any, wav: Path) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        *ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}"])


def test_microphone_drives_the_mouth_and_stop_and_close_end_the_session(
        demo_edge: Edge, speech_wav: Path, artifacts_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    truth = np.load(DEMO / "truth.npz")["mouth_centre"].tolist()
    with sync_playwright() as p:
        browser = _launch(p, speech_wav)
        try:
            page, errors = open_page(browser, demo_edge.url + "/",
                                     "document.querySelector('#avatar').options.length > 0")
            page.evaluate(MEASURE, truth)
            page.click("#tab-mic")
            assert not page.is_checked("#mic-monitor")  # own voice off by default
            page.click("#mic-start")
            page.wait_for_function("window.synctalk.mic.running", timeout=10_000)
            _wait_active(demo_edge, 1)
            try:
                page.wait_for_function(f"window.painted.length >= {PAINTED}", timeout=120_000)
            except Exception:
                print(page.evaluate("JSON.stringify([window.painted.length, "
                                    "window.synctalk.figures(), window.synctalk.mic.sent])"))
                raise
            page.click("#debug summary")
            page.wait_for_timeout(300)
            figures = page.evaluate("window.synctalk.figures()")
            latency_text = page.inner_text("#fig-latency")
            edge_dropped_text = page.inner_text("#fig-edge-dropped")
            level = page.evaluate("window.synctalk.mic.level")
            painted = page.evaluate("window.painted")
            page.screenshot(path=str(artifacts_dir / "web_live.png"), full_page=True)

            page.click("#mic-stop")
            page.wait_for_function("!window.synctalk.mic.running", timeout=5_000)
            assert "Stopped" in page.inner_text("#status")
            _wait_active(demo_edge, 0)

            page.click("#mic-start")  # works again after Stop
            page.wait_for_function("window.synctalk.figures().painted >= 10", timeout=60_000)
            _wait_active(demo_edge, 1)
            page.close()  # closing the page ends the session
            _wait_active(demo_edge, 0)
            assert not errors, errors
        finally:
            browser.close()

    assert figures["live"] and figures["error"] is None, figures
    assert figures["audio_state"] == "running"
    assert figures["latency_ms"] is not None and figures["latency_ms"] > 0, figures
    assert latency_text != "-" and edge_dropped_text != "-"
    assert level > 0 or figures["painted"] > 0
    dark = np.array([f["dark"] for f in painted], float)
    rms = np.array([f["rms"] for f in painted], float)
    loud, quiet = rms > 0.05, rms < 0.005
    assert loud.sum() >= 15 and quiet.sum() >= 5, (loud.sum(), quiet.sum())
    r = float(np.corrcoef(dark, rms)[0, 1])
    print(f"mouth opening vs loudness r={r:.3f}; open when loud {dark[loud].mean():.1f} px, "
          f"when quiet {dark[quiet].mean():.1f} px; latency median "
          f"{figures['latency_ms']:.0f} ms p95 {figures['latency_p95_ms']:.0f} ms; "
          f"edge dropped {figures['edge_dropped']}, page dropped {figures['dropped']}")
    assert dark[loud].mean() > dark[quiet].mean() + 3
    assert r > 0.4
