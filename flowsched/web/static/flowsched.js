// flowsched webserver: small progressive enhancements; every page works without them.
"use strict";

// Forms marked data-autosubmit submit when a control changes (pause switch, run picker).
document.addEventListener("change", (event) => {
  const form = event.target.closest("form[data-autosubmit]");
  if (form) form.requestSubmit();
});

// Forms marked data-confirm ask first (mark success/failed, clear).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
}, true);

// Regions marked data-live="on" are refreshed in place while something is still running:
// the page is fetched again and each live region replaced by its new version.
const LIVE_EVERY_MS = 3000;

function liveRegions(root) {
  return Array.from(root.querySelectorAll("[data-live]"));
}

function userIsBusy() {
  const active = document.activeElement;
  return active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName);
}

async function refreshLive() {
  const regions = liveRegions(document);
  if (!regions.some((r) => r.dataset.live === "on")) return;
  if (!userIsBusy() && !document.hidden) {
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const region of regions) {
          const next = fresh.getElementById(region.id);
          if (next) region.replaceWith(document.importNode(next, true));
        }
      }
    } catch (err) {
      // The server may be restarting; try again at the next tick.
    }
  }
  window.setTimeout(refreshLive, LIVE_EVERY_MS);
}

window.addEventListener("DOMContentLoaded", () => {
  window.setTimeout(refreshLive, LIVE_EVERY_MS);
  const log = document.querySelector("pre.log");
  if (log) log.scrollTop = log.scrollHeight;
});
