"""The page between utterances, in headless Chromium against a real stack: the avatar keeps
moving (consecutive idle frames differ, the walk steps one source frame at a time) at no
U-Net cost (the renderer's own frame counter), speech starts next to the idle frame shown,
and idling resumes next to the last speech frame.

Needs Debian's `chromium` and the `playwright` package; skipped with the reason otherwise."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.support.browser import browser_stack, chromium_page
from tests.support.stack import AVATAR, Edge, Stack

CANVAS_DIGEST = """() => {
    const c = document.querySelector('#stage');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
    return h;
}"""


stack = pytest.fixture(browser_stack, scope="module", name="stack")


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Edge:
    return stack.edge()


@pytest.fixture(scope="module")
def page(edge: Edge):  # type: ignore[no-untyped-def]
    with chromium_page(edge.url + "/", "window.synctalk && window.synctalk.player.idleLoop !== null") as page:
        yield page


def unet_frames() -> float:
    return REGISTRY.get_sample_value("synctalk_renderer_frames_total", {"avatar": AVATAR}) or 0.0


def idle_painted(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate("window.synctalk.player.idleStats.painted"))


def test_the_idle_avatar_keeps_moving_at_no_u_net_cost(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("window.synctalk.player.idleStats.painted >= 10", timeout=30_000)
    before, painted = unet_frames(), idle_painted(page)
    digests = []
    for _ in range(12):
        digests.append(page.evaluate(CANVAS_DIGEST))
        page.wait_for_timeout(90)
    page.wait_for_timeout(800)
    assert unet_frames() == before  # two seconds of idling: not one U-Net frame
    rate = (idle_painted(page) - painted) / 1.9
    assert 12 <= rate <= 30, rate  # about 25 frames/s
    changes = sum(a != b for a, b in zip(digests, digests[1:], strict=False))
    assert changes >= 6, digests  # consecutive samples show different frames
    sources = page.evaluate("window.synctalk.player.idleStats.sources")
    assert all(abs(a - b) == 1 for a, b in zip(sources, sources[1:], strict=False)), sources
    assert page.errors == []


def test_speech_starts_next_to_the_idle_frame_and_idling_resumes_after_it(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("""() => {
        const player = window.synctalk.player;
        window.handover = null;
        player.onPaint = (f) => {
            window.lastSpeech = { source: f.sourceFrame, idlePainted: player.idleStats.painted };
            if (window.handover === null) {
                const idle = player.idleStats.sources;
                window.handover = { idle: idle[idle.length - 1], speech: f.sourceFrame };
            }
        };
    }""")
    page.wait_for_function("window.synctalk.player.idleStats.painted >= 5", timeout=30_000)
    done = int(page.evaluate("window.synctalk.done"))
    page.fill("#text", "Hello there, good evening.")
    page.click("#speak")
    page.wait_for_function(f"window.synctalk.done > {done}", timeout=90_000)
    figures = page.evaluate("window.synctalk.figures()")
    assert figures["status"] == "complete", figures
    handover = page.evaluate("window.handover")
    assert abs(handover["speech"] - handover["idle"]) == 1, handover
    last_speech = page.evaluate("window.lastSpeech")
    last, painted = int(last_speech["source"]), int(last_speech["idlePainted"])
    page.wait_for_function(f"window.synctalk.player.idleStats.painted >= {painted + 5}",
                           timeout=30_000)
    sources, now = page.evaluate("""() => {
        const st = window.synctalk.player.idleStats;
        return [st.sources.slice(), st.painted];
    }""")
    resumed = sources[-(now - painted)]
    assert abs(resumed - last) == 1, (last, sources)
    assert page.errors == []
