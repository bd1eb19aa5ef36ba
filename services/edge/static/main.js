/* SyncTalk 2D page, the entry module: the tabs, the voice and avatar choices, the avatar's
 * still frame and idle loop, and each part's wiring. Parts: player.js (the av stream on the
 * audio clock, and the idle loop between utterances: idle-loop.js),
 * live-mic.js (the microphone to /live), http-tabs.js, mic-tab.js, debug-panel.js. */

import { wireDebugPanel } from "./debug-panel.js";
import { $, setStatus } from "./dom.js";
import { wireHttpTabs } from "./http-tabs.js";
import { IdleLoop } from "./idle-loop.js";
import { wireMicTab } from "./mic-tab.js";
import { player } from "./page-state.js";

const TABS = ["text", "audio", "mic"];

function selectTab(which) {
  for (const name of TABS) {
    const on = name === which;
    $(`tab-${name}`).classList.toggle("active", on);
    $(`tab-${name}`).setAttribute("aria-selected", String(on));
    $(`panel-${name}`).hidden = !on;
  }
}

async function loadChoices() {
  try {
    const [voices, avatars] = await Promise.all([
      fetch("/voices").then((r) => r.json()),
      fetch("/avatars").then((r) => r.json()),
    ]);
    for (const v of voices.voices || []) {
      const opt = new Option(`${v.id} (${v.engine})`, v.id, v.default, v.default);
      $("voice").add(opt);
    }
    for (const a of avatars.avatars || []) {
      const opt = new Option(a.name, a.name, a.name === avatars.default, a.name === avatars.default);
      $("avatar").add(opt);
    }
  } catch (e) {
    setStatus("Could not list voices and avatars; is the server up?", "error");
  }
  drawStill();
}

/* The avatar's still at once, then its idle loop, which keeps the avatar moving between
 * utterances (the still stays if the loop cannot be had). */
function drawStill() {
  const avatar = $("avatar").value || "";
  player.setIdleLoop(null);
  const img = new Image();
  img.onload = () => {
    player.idle = img;
    player.showIdle();
  };
  img.src = `/avatar?avatar=${encodeURIComponent(avatar)}`;
  IdleLoop.load(avatar).then((loop) => {
    if (($("avatar").value || "") === avatar) player.setIdleLoop(loop);
  }, (e) => console.warn("no idle loop:", e.message));
}

wireHttpTabs();
wireMicTab();
for (const name of TABS) $(`tab-${name}`).addEventListener("click", () => selectTab(name));
$("avatar").addEventListener("change", drawStill);
loadChoices();
wireDebugPanel();
