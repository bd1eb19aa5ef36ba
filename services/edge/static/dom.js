/* The page's DOM shorthands, shared by every part of the page. */

export const $ = (id) => document.getElementById(id);

/* The status line under the controls; `kind` is "ok", "error" or nothing. */
export function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}
