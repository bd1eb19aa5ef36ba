/* The Debug panel: the live figures of the stream playing now, the server's dump switches,
 * and the health of every service. */

import { $, setStatus } from "./dom.js";
import { player } from "./page-state.js";

const SWITCHES = ["dbg-enabled", "dbg-frames", "dbg-audio"];

function fmt(x, digits, unit) {
  return x === null || x === undefined || Number.isNaN(x) ? "-" : `${x.toFixed(digits)}${unit || ""}`;
}

export function showFigures() {
  const f = player.figures();
  // While streaming: pictures painted in the last second; afterwards: the stream's average.
  const fps = f.status === "streaming" ? f.fps_now : f.fps;
  $("fig-fps").textContent = f.painted ? fmt(fps, f.status === "streaming" ? 0 : 1) : "-";
  $("fig-ttff").textContent = fmt(f.time_to_first_frame_ms, 0, " ms");
  $("fig-frames").textContent = `${f.received} / ${f.painted}`;
  $("fig-dropped").textContent = `${f.dropped}`;
  $("fig-offset").textContent = f.av_offset_ms === null ? "-"
    : `${fmt(f.av_offset_ms, 1, " ms")} (worst ${fmt(f.av_offset_max_ms, 0)})`;
  $("fig-buffer").textContent = fmt(Math.max(0, f.buffered_ms), 0, " ms");
  $("fig-latency").textContent = f.latency_ms === null ? "-"
    : `${fmt(f.latency_ms, 0, " ms")} (p95 ${fmt(f.latency_p95_ms, 0)})`;
  $("fig-edge-dropped").textContent = f.live ? `${f.edge_dropped}` : "-";
  $("fig-session").textContent = f.session ? f.session.slice(0, 8) + "…" : "-";
  $("fig-session").title = f.session || "";
}

async function loadDebug() {
  try {
    const r = await fetch("/debug/status");
    const d = await r.json();
    const off = !r.ok;
    for (const id of SWITCHES) $(id).disabled = off;
    $("dbg-note").hidden = !off;
    if (off) { $("dbg-note").textContent = d.detail; return; }
    $("dbg-enabled").checked = d.enabled;
    $("dbg-frames").checked = d.save_frames;
    $("dbg-audio").checked = d.save_audio;
    $("dbg-frames-dir").textContent = d.frames_dir;
    $("dbg-audio-dir").textContent = d.audio_dir;
  } catch (e) { /* server down: the health list says so */ }
}

async function saveDebug() {
  const body = {
    enabled: $("dbg-enabled").checked,
    save_frames: $("dbg-frames").checked,
    save_audio: $("dbg-audio").checked,
  };
  const r = await fetch("/debug/config", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (r.ok) setStatus("Debug settings updated.", "ok");
  else setStatus(`Debug settings refused (${r.status}).`, "error");
  loadDebug();
}

async function loadHealth() {
  try {
    const h = await (await fetch("/health")).json();
    const list = $("health");
    list.replaceChildren();
    for (const [name, state] of Object.entries(h.services)) {
      const li = document.createElement("li");
      li.className = state === "ok" ? "ok" : "bad";
      li.textContent = `${name}: ${state}`;
      list.append(li);
    }
  } catch (e) { /* retried on the next tick */ }
}

/* Figures refresh four times a second; health every 5 s while the panel is open. */
export function wireDebugPanel() {
  setInterval(showFigures, 250);
  for (const id of SWITCHES) $(id).addEventListener("change", saveDebug);
  $("debug").addEventListener("toggle", () => { if ($("debug").open) { loadDebug(); loadHealth(); } });
  loadDebug();
  loadHealth();
  setInterval(() => { if ($("debug").open) loadHealth(); }, 5000);
}
