// Refundflow customer portal: a request's status, live while it is open (polls a small JSON endpoint; no reload).
// Every page works without it: reloading shows the same.
"use strict";

// The payment's facts (refunded so far, the subscription) change with its requests: the same read as the card's.
function showPaymentFacts(html) {
  const facts = document.getElementById("payment-facts");
  if (facts && typeof html === "string" && facts.dataset.shown !== html) {
    facts.innerHTML = html;
    facts.dataset.shown = html;
  }
}

// The page as served says "Reload this page to see the latest": with the script running, it updates by itself.
function sayItUpdates(box) {
  const updating = box.querySelector(".live");
  const reload = box.querySelector(".reload-hint");
  if (updating) updating.hidden = false;
  if (reload) reload.hidden = true;
}

// Polling stopped for good: the visible sentence says so, the spinner goes.
function sayItStopped(box, words) {
  const updating = box.querySelector(".live");
  if (!updating) return;
  const said = document.createElement("span");
  said.className = "muted small";
  said.textContent = words;
  updating.replaceChildren(said);
}

function watchRequest(box) {
  const live = document.getElementById("live-status");
  let current = box;
  let shown = null;
  let delay = 1500;
  async function poll() {
    try {
      const answer = await fetch(current.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.ok) {
        const state = await answer.json();
        if (state.html !== shown) {
          const holder = document.createElement("div");
          holder.innerHTML = state.html;
          const next = holder.firstElementChild;
          const moved = next.dataset.status !== current.dataset.status;
          current.replaceWith(next);
          current = next;
          sayItUpdates(current);
          shown = state.html;
          if (moved && live) live.textContent = "Your request is now: " + state.label + ".";
        }
        showPaymentFacts(state.payment_html);
        if (state.final) return;
      } else if (answer.status >= 400 && answer.status < 500 && answer.status !== 408 && answer.status !== 429) {
        // The link expired (401) or the request is not this link's (404): asking again changes nothing.
        const stopped = "This page no longer updates by itself: open the latest link from your email.";
        sayItStopped(current, stopped);
        if (live) live.textContent = stopped;
        return;
      }
    } catch (error) { /* the network hiccuped: try again */ }
    delay = Math.min(delay * 1.3, 8000);
    setTimeout(poll, delay);
  }
  sayItUpdates(box);
  setTimeout(poll, delay);
}

// A second click sends nothing: the server answers the same form once anyway (its form_key), this spares the trip.
function sendOnce(form) {
  const button = form.querySelector("button[type='submit']");
  form.addEventListener("submit", (event) => {
    if (form.dataset.sending === "true") {
      event.preventDefault();
      return;
    }
    form.dataset.sending = "true";
    if (button) button.disabled = true;
  });
  // Back to this page from the browser's cache: the form may be sent again (the server decides what that means).
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    form.dataset.sending = "false";
    if (button) button.disabled = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("article.request[data-final='false']").forEach(watchRequest);
  document.querySelectorAll("form[data-send-once]").forEach(sendOnce);
});
