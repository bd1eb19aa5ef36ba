/* What the parts of the page share: the one player and microphone, the run counters the
 * tests read from window.synctalk, and the Stop buttons, enabled while anything runs. */

import { $ } from "./dom.js";
import { LiveMic } from "./live-mic.js";
import { Player } from "./player.js";

export const player = new Player($("stage"));
export const mic = new LiveMic(player, null); // mic-tab.js sets mic.onEnd
export const synctalk = { player, mic, figures: () => player.figures(), runs: 0, done: 0 };
window.synctalk = synctalk;

/* Speak and Animate stay enabled while the avatar speaks: pressing them interrupts it
 * (barge-in); the session id goes with the new request so the server stops the old one. */
let running = 0;
export function busy(on) {
  running += on ? 1 : -1;
  $("stop").disabled = running === 0;
  $("stop-audio").disabled = running === 0;
  $("mic-stop").disabled = running === 0;
}
