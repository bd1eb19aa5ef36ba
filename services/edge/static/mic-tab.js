/* The Microphone tab: Start and Stop of the live session (live-mic.js), its end, and the
 * input level meter. */

import { showFigures } from "./debug-panel.js";
import { $, setStatus } from "./dom.js";
import { stop } from "./http-tabs.js";
import { busy, mic, synctalk } from "./page-state.js";

async function startMic() {
  if (mic.running) return;
  synctalk.runs += 1;
  $("download").hidden = true;
  setStatus("Opening the microphone…");
  try {
    await mic.start($("avatar").value, $("mic-monitor").checked);
  } catch (e) {
    setStatus(e.message || String(e), "error");
    synctalk.done += 1;
    return;
  }
  busy(true);
  $("mic-start").disabled = true;
  setStatus("Listening: talk, and the avatar speaks with your voice.");
}

function micEnded(stats, userStopped) {
  busy(false);
  $("mic-start").disabled = false;
  $("mic-level").style.width = "0";
  if (userStopped) setStatus("Stopped.");
  else if (stats.status === "error") setStatus(`Live session ended: ${stats.error}`, "error");
  else setStatus("Live session ended.");
  synctalk.done += 1;
  showFigures();
}

export function wireMicTab() {
  mic.onEnd = micEnded;
  setInterval(() => {
    if (mic.running) $("mic-level").style.width = `${Math.min(100, Math.sqrt(mic.level) * 180).toFixed(0)}%`;
  }, 60);
  $("mic-start").addEventListener("click", startMic);
  $("mic-stop").addEventListener("click", stop);
  $("mic-monitor").addEventListener("change", () => mic.setMonitor($("mic-monitor").checked));
  window.addEventListener("pagehide", () => mic.stop());
}
