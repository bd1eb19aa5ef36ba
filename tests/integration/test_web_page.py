"""The web page in headless Chromium against a real stack: type text, press Speak, and check
that frames are painted, the sound plays, and the page's own A/V offset is within ±40 ms.
Also the debug panel (live figures, settings round trip) and a screenshot in tests/artifacts/.

Needs Debian's `chromium` and the `playwright` package (driving that Chromium, no download);
skipped with the reason when either is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import browser_stack, chromium_page
from tests.support.http import metric_by_label
from tests.support.stack import Edge, Stack

stack = pytest.fixture(browser_stack, scope="module", name="stack")


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    edge = stack.edge(debug={"endpoints": True})
    with edge.client() as client:  # a served stack is warm: load the avatar's model now
        assert client.get("/generate", params={"text": "Warm up.", "realtime": "false"}
                          ).status_code == 200
    return edge


@pytest.fixture(scope="module")
def page(edge: Edge):  # type: ignore[no-untyped-def]
    with chromium_page(edge.url + "/", "document.querySelector('#voice').options.length > 0") as page:
        yield page


def test_speak_paints_frames_plays_sound_in_sync(page, edge: Edge, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    page.fill("#text", "Hello there! This is the page speaking, in real time.")
    page.click("#speak")
    page.wait_for_function("window.synctalk.done >= 1", timeout=90_000)
    figures = page.evaluate("window.synctalk.figures()")
    assert figures["status"] == "complete", figures
    assert figures["error"] is None
    assert figures["received"] > 50  # about three seconds of speech
    assert figures["painted"] + figures["dropped"] == figures["received"]
    assert figures["painted"] >= 0.9 * figures["received"]
    # Sound: every frame's 40 ms were scheduled on the audio clock and played to the end.
    assert figures["audio_state"] == "running"
    assert figures["audio_started"] == figures["received"]
    assert figures["audio_ended"] == figures["received"]
    # Picture painted within ±40 ms of its sound, on average and for nearly every frame.
    assert abs(figures["av_offset_ms"]) <= 40, figures
    assert figures["fps"] > 10  # 25 unless the stream had to rebuffer (busy machine)
    assert figures["time_to_first_frame_ms"] > 0
    # The canvas shows the avatar (not a blank or uniform image).
    spread = page.evaluate("""() => {
        const c = document.querySelector('#stage');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0;
        for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return hi - lo;
    }""")
    assert spread > 40
    link = page.locator("#download")
    assert link.is_visible() and link.get_attribute("href").startswith("/result/")
    page.click("#debug summary")
    page.wait_for_timeout(400)
    assert page.inner_text("#fig-offset") != "-"
    assert "renderer: ok" in page.inner_text("#health")
    page.screenshot(path=str(artifacts_dir / "web_page.png"), full_page=True)
    assert not page.errors  # type: ignore[attr-defined]
    with edge.client() as client:
        metrics = client.get("/metrics").text
    assert "synctalk_edge_player_av_offset_seconds_count 1.0" in metrics


def test_debug_toggles_round_trip(page, edge: Edge) -> None:  # type: ignore[no-untyped-def]
    page.click("#dbg-enabled")
    page.wait_for_function("document.querySelector('#status').textContent.includes('Debug')")
    with edge.client() as client:
        assert client.get("/debug/status").json()["enabled"] is True
    page.click("#dbg-enabled")
    page.wait_for_timeout(300)
    with edge.client() as client:
        assert client.get("/debug/status").json()["enabled"] is False


def test_upload_tab_animates_a_file(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.audio import tone_pcm, wav_bytes

    wav = tmp_path / "tone.wav"
    wav.write_bytes(wav_bytes(tone_pcm(1.0)))
    done = page.evaluate("window.synctalk.done")
    page.click("#tab-audio")
    page.set_input_files("#file", str(wav))
    page.click("#upload")
    page.wait_for_function(f"window.synctalk.done > {done}", timeout=60_000)
    figures = page.evaluate("window.synctalk.figures()")
    assert figures["status"] == "complete" and figures["received"] == 25
    assert figures["audio_ended"] == 25


def _outcomes(edge: Edge) -> dict[str, float]:
    return metric_by_label(edge, 'synctalk_edge_utterances_total{input="text",outcome="')


def test_speaking_again_interrupts_and_stop_cancels(page, edge: Edge) -> None:  # type: ignore[no-untyped-def]
    before = _outcomes(edge)
    done = page.evaluate("window.synctalk.done")
    page.click("#tab-text")
    page.fill("#text", "This is a long sentence that keeps going so that it can be interrupted "
                       "by the next one, which the listener asks for right away.")
    page.click("#speak")
    page.wait_for_function("window.synctalk.figures().painted >= 10", timeout=60_000)
    page.fill("#text", "Sorry, new words.")
    page.click("#speak")
    page.wait_for_function(f"window.synctalk.done >= {done + 2}", timeout=60_000)
    figures = page.evaluate("window.synctalk.figures()")
    assert figures["status"] == "complete" and figures["received"] < 60
    after = _outcomes(edge)
    assert after.get("complete", 0) - before.get("complete", 0) == 1
    assert sum(after.values()) - sum(before.values()) == 2  # the first one did not complete

    page.fill("#text", "One more long sentence, to be stopped with the stop button, right now.")
    page.click("#speak")
    page.wait_for_function("window.synctalk.figures().painted >= 5", timeout=60_000)
    page.click("#stop")
    page.wait_for_function(f"window.synctalk.done >= {done + 3}", timeout=30_000)
    assert "Stopped" in page.inner_text("#status")
    assert _outcomes(edge).get("complete", 0) == after.get("complete", 0)


STOP_AND_MEASURE = """async (button) => {
    const p = window.synctalk.player;
    const w = p.idle.naturalWidth, h = p.idle.naturalHeight;
    const ref = document.createElement('canvas');
    ref.width = w; ref.height = h;
    ref.getContext('2d').drawImage(p.idle, 0, 0);
    const want = ref.getContext('2d').getImageData(0, 0, w, h).data;
    const stage = document.querySelector('#stage');
    const showsIdle = () => {
        if (p.idleLoop) return p.idleShown !== null;  // an idle-loop frame is on the canvas
        if (stage.width !== w || stage.height !== h) return false;
        const got = stage.getContext('2d').getImageData(0, 0, w, h).data;
        for (let i = 0; i < got.length; i += 97) if (Math.abs(got[i] - want[i]) > 2) return false;
        return true;
    };
    const levelBefore = p.level();
    const idleBefore = showsIdle();
    const t0 = performance.now();
    document.querySelector(button).click();
    let silentMs = null, idleMs = null;
    while (performance.now() - t0 < 2000 && (silentMs === null || idleMs === null)) {
        const t = performance.now() - t0;
        if (silentMs === null && p.level() < 1e-3) silentMs = t;
        if (idleMs === null && showsIdle()) idleMs = t;
        await new Promise((r) => setTimeout(r, 5));
    }
    return {levelBefore, idleBefore, silentMs, idleMs};
}"""


def _speak_until_loud(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.click("#tab-text")
    page.fill("#text", text)
    page.click("#speak")
    page.wait_for_function("window.synctalk.figures().painted >= 10 && "
                           "window.synctalk.player.level() > 0.01", timeout=60_000)


def test_stop_silences_within_150_ms_and_shows_idle_within_250_ms(page) -> None:  # type: ignore[no-untyped-def]
    """Barge-in budget (issue: sound silent ≤ 150 ms, avatar idle ≤ 250 ms), on the page's
    own audio output (an AnalyserNode after the gain) and its canvas."""
    done = page.evaluate("window.synctalk.done")
    _speak_until_loud(page, "A long sentence that keeps the avatar talking for several "
                            "seconds, so that the stop button has something to stop.")
    measured = page.evaluate(STOP_AND_MEASURE, "#stop")
    assert measured["levelBefore"] > 0.01 and not measured["idleBefore"], measured
    assert measured["silentMs"] is not None and measured["silentMs"] <= 150, measured
    assert measured["idleMs"] is not None and measured["idleMs"] <= 250, measured
    page.wait_for_function(f"window.synctalk.done >= {done + 1}", timeout=30_000)


def test_speaking_again_silences_the_old_speech_within_150_ms(page) -> None:  # type: ignore[no-untyped-def]
    done = page.evaluate("window.synctalk.done")
    _speak_until_loud(page, "Another long sentence that keeps going and going, so that the "
                            "listener can interrupt it with new words.")
    page.fill("#text", "New words now.")
    measured = page.evaluate(STOP_AND_MEASURE, "#speak")
    assert measured["levelBefore"] > 0.01, measured
    assert measured["silentMs"] is not None and measured["silentMs"] <= 150, measured
    assert measured["idleMs"] is not None and measured["idleMs"] <= 250, measured
    page.wait_for_function(f"window.synctalk.done >= {done + 2}", timeout=60_000)
    assert page.evaluate("window.synctalk.figures()")["status"] == "complete"
