// Refundflow dashboard: small progressive enhancements. Every page works without them; the server decides.
"use strict";

function csrfToken(form) {
  const field = (form || document).querySelector('input[name="csrf_token"]');
  return field ? field.value : "";
}

function toMajor(minor, exponent) {
  if (exponent === 0) return String(minor);
  const text = String(minor).padStart(exponent + 1, "0");
  return text.slice(0, -exponent) + "." + text.slice(-exponent);
}

// The refund's status, live while it is processing (polls a small JSON endpoint; no reload).
function watchRefundStatus() {
  const box = document.getElementById("refund-status");
  if (!box || box.dataset.status !== "processing") return;
  const badge = document.getElementById("status-badge");
  const spinner = box.querySelector(".spinner");
  let delay = 1000;
  async function poll() {
    try {
      const answer = await fetch(box.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (answer.ok) {
        const state = await answer.json();
        // The box is a live region: touched only when the status changed, or each poll would be read out again.
        if (state.status !== box.dataset.status) {
          badge.innerHTML = '<span class="badge badge-' + state.status + '">' + state.label + "</span>";
          box.dataset.status = state.status;
        }
        const timeline = document.getElementById("timeline");
        if (timeline) timeline.outerHTML = state.timeline_html;
        if (state.final) { if (spinner) spinner.remove(); return; }
      }
    } catch (error) { /* the network hiccuped: try again */ }
    delay = Math.min(delay * 1.3, 5000);
    setTimeout(poll, delay);
  }
  setTimeout(poll, delay);
}

// The proration calculator: a preview as you type (the same rule: amount × days / period, halves up), then the
// server's own answer fills the amount field.
function prorationCalculator() {
  const calc = document.getElementById("proration");
  if (!calc) return;
  calc.hidden = false; // hidden without JavaScript, where it could do nothing
  const days = document.getElementById("prorate-days");
  const period = document.getElementById("prorate-period");
  const result = document.getElementById("prorate-result");
  const amountField = document.getElementById("amount");
  const exponent = Number(calc.dataset.exponent);
  const paid = BigInt(calc.dataset.paymentAmount);
  function preview() {
    const d = Number(days.value), p = Number(period.value);
    if (!d || !p || d > p) { result.textContent = d > p ? "The days cannot exceed the period." : ""; return; }
    const amount = (2n * paid * BigInt(d) + BigInt(p)) / (2n * BigInt(p));
    result.textContent = "Preview: " + toMajor(amount, exponent) + " " + calc.dataset.currency + " for " + d + " of " + p + " days";
  }
  days.addEventListener("input", preview);
  period.addEventListener("input", preview);
  document.getElementById("prorate-apply").addEventListener("click", async () => {
    const body = new FormData();
    body.append("days", days.value);
    body.append("period", period.value);
    const answer = await fetch(calc.dataset.url, {
      method: "POST", body, credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken(calc.closest("form")) },
    });
    const data = await answer.json();
    if (!answer.ok) { result.textContent = data.error ? data.error.message : "Enter the days and the period."; return; }
    amountField.value = toMajor(data.amount, exponent);
    let text = "Prorated: " + toMajor(data.prorated, exponent) + " " + data.currency + " — put in the amount field.";
    if (data.amount !== data.prorated) text += " (capped at the amount asked for)";
    result.textContent = text;
    amountField.focus();
  });
}

// The refund policy editor's preview of the public text, from the server's own words.
function policyPreview() {
  const form = document.getElementById("policy-form");
  const target = document.getElementById("policy-preview");
  if (!form || !target) return;
  let timer = null;
  async function refresh() {
    const answer = await fetch(form.dataset.previewUrl, {
      method: "POST", body: new FormData(form), credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken(form) },
    });
    const data = await answer.json();
    // Not a live region: the whole policy read aloud after every pause in typing drowned the typing out.
    const text = answer.ok ? data.text : (data.error ? data.error.message : "");
    if (text !== target.textContent) target.textContent = text;
  }
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 250); });
}

document.addEventListener("DOMContentLoaded", () => {
  watchRefundStatus();
  prorationCalculator();
  policyPreview();
});
