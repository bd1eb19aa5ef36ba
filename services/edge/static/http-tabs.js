/* The Text and Audio file tabs: one HTTP request per utterance (/generate, or
 * /generate-from-audio), its av stream played by the player; and Stop, shared by every tab. */

import { showFigures } from "./debug-panel.js";
import { $, setStatus } from "./dom.js";
import { busy, mic, player, synctalk } from "./page-state.js";

let sessionId = null;

async function reportFigures(stats) {
  if (player.stats !== stats) return; // a newer run replaced this one
  const f = player.figures();
  if (!stats.session || !f.painted) return;
  try {
    await fetch(`/sessions/${stats.session}/stats`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        av_offset_ms: f.av_offset_ms, fps: f.fps, dropped_frames: f.dropped,
        time_to_first_frame_ms: f.time_to_first_frame_ms,
      }),
    });
  } catch (e) { /* figures are best effort */ }
}

/* `makeRequest(sid)` gives [url, init]; a session the server no longer knows (it restarted,
 * or the session expired) is dropped and the request made once more without it. */
async function run(makeRequest) {
  mic.stop(); // barge-in on the live microphone too
  synctalk.runs += 1;
  $("download").hidden = true;
  busy(true);
  setStatus("Starting…");
  try {
    let stats;
    try {
      stats = await player.play(...makeRequest(sessionId), onStarted);
    } catch (e) {
      if (!sessionId || !String(e.message).includes("unknown session")) throw e;
      sessionId = null;
      stats = await player.play(...makeRequest(null), onStarted);
    }
    if (player.stats !== stats) return; // interrupted by a newer run, which reports itself
    if (stats.status === "complete") {
      setStatus(`Done: ${stats.painted} frames.`, "ok");
      if (stats.resultUrl) {
        $("download").href = stats.resultUrl;
        $("download").hidden = false;
      }
    } else if (stats.status === "interrupted" || stats.status === "cancelled") {
      setStatus("Interrupted.");
    } else if (stats.status === "error") {
      setStatus(`Stopped: ${stats.error}`, "error");
    }
    await reportFigures(stats);
  } catch (e) {
    if (e.name === "AbortError") setStatus("Stopped.");
    else setStatus(e.message || String(e), "error");
  } finally {
    busy(false);
    synctalk.done += 1;
    showFigures();
  }
}

function onStarted(sid) {
  sessionId = sid;
  setStatus("Speaking…");
}

/* Speech goes on from the frame on the canvas (the idle loop's, or the last one spoken). */
function withStartFrame(params) {
  const start = player.startFrame();
  if (start !== null) params.set("start_frame", String(start));
}

function speak() {
  const body = JSON.stringify({ text: $("text").value, voice: $("voice").value, avatar: $("avatar").value });
  run((sid) => {
    const params = new URLSearchParams({ format: "av" });
    if (sid) params.set("session_id", sid);
    withStartFrame(params);
    return [`/generate?${params}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    }];
  });
}

function animateFile() {
  const file = $("file").files[0];
  if (!file) {
    setStatus("Choose an audio file first.", "error");
    return;
  }
  run((sid) => {
    const form = new FormData();
    form.append("audio_file", file, file.name);
    const params = new URLSearchParams({ format: "av", avatar: $("avatar").value });
    if (sid) params.set("session_id", sid);
    withStartFrame(params);
    return [`/generate-from-audio?${params}`, { method: "POST", body: form }];
  });
}

/* Stop whatever runs: the live microphone, else the stream and its session on the server. */
export async function stop() {
  if (mic.running) {
    mic.stop();
    return;
  }
  const sid = sessionId;
  player.stop("stopped");
  if (sid) {
    try { await fetch(`/sessions/${sid}/cancel`, { method: "POST" }); } catch (e) { /* gone */ }
  }
  setStatus("Stopped.");
}

export function wireHttpTabs() {
  $("speak").addEventListener("click", speak);
  $("upload").addEventListener("click", animateFile);
  $("stop").addEventListener("click", stop);
  $("stop-audio").addEventListener("click", stop);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) speak();
  });
}
