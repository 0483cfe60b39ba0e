// Shine's demo page: send the chosen or dropped photo to the guest API with overlay=true and show the
// answer. Plain JS, no build step, nothing from other sites; every URL is relative to this page.
"use strict";

const API = "api/v2/analyze/guest?overlay=true";

// The words for every code of an answer come from the service (GET api/v2/vocabulary), so a concern,
// warning or reason added there shows here with its own words.
const VOCABULARY_URL = "api/v2/vocabulary";
let vocabulary = { concerns: {}, severities: {}, warnings: {}, region_reasons: {}, views: {} };

async function loadVocabulary() {
  const response = await fetch(VOCABULARY_URL);
  if (!response.ok) throw new Error("vocabulary: HTTP " + response.status);
  const body = await response.json();
  const concerns = {};
  for (const concern of body.concerns) concerns[concern.name] = concern.label;
  vocabulary = { ...body, concerns };
}

const vocabularyLoaded = loadVocabulary().catch(() => {});

const $ = (id) => document.getElementById(id);
let inFlight = null;

function words(name) {
  return name.replace(/_/g, " ");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(code, message) {
  $("result").hidden = true;
  $("error-code").textContent = code ? code + ": " : "";
  $("error-message").textContent = message;
  $("error").hidden = false;
}

function concernItem(name, concern) {
  const item = element("li", "concern");
  item.dataset.concern = name;
  const head = element("div", "concern-head");
  head.append(element("span", "concern-name", vocabulary.concerns[name] || words(name)));
  const score = concern.score === null ? "n/a" : concern.score.toFixed(0);
  head.append(element("span", "concern-score", score));
  const severity = concern.severity || "unknown";
  head.append(element("span", "badge severity-" + severity, vocabulary.severities[severity] || "not read"));
  item.append(head);
  const bar = element("div", "bar");
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-label", (vocabulary.concerns[name] || name) + " score");
  const fill = element("span", "fill severity-" + severity);
  if (concern.score !== null) {
    bar.setAttribute("aria-valuenow", String(concern.score));
    fill.style.width = Math.max(0, Math.min(100, concern.score)) + "%";
  }
  bar.append(fill);
  item.append(bar);
  if (concern.reason) item.append(element("p", "concern-note", concern.reason));
  if (name === "acne" && concern.count !== null && concern.count !== undefined) {
    const lesions = concern.count === 1 ? "1 lesion found" : concern.count + " lesions found";
    item.append(element("p", "concern-note", lesions));
  }
  return item;
}

function summaryRow(list, term, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(element("dt", "", term), element("dd", "", value));
}

function showReport(report) {
  $("error").hidden = true;
  const overlay = report.overlay && report.overlay.png_base64;
  if (overlay) $("overlay").src = "data:image/png;base64," + overlay;
  else $("overlay").removeAttribute("src");
  const overall = report.overall.score;
  $("overall-score").textContent = overall === null ? "n/a" : overall.toFixed(0);

  const summary = $("summary");
  summary.replaceChildren();
  summaryRow(summary, "View", vocabulary.views[report.view] || report.view);
  const tone = report.skin_tone;
  if (tone.category) summaryRow(summary, "Skin tone", words(tone.category) + " (ITA " + tone.ita_deg + "°)");
  if (report.skin_type.label) summaryRow(summary, "Skin type", report.skin_type.label);
  summaryRow(summary, "Model", report.model.name + " v" + report.model.version);
  summaryRow(summary, "Server time", Math.round(report.timing_ms.total) + " ms");

  const concerns = $("concerns");
  concerns.replaceChildren();
  for (const [name, concern] of Object.entries(report.concerns)) concerns.append(concernItem(name, concern));

  const warnings = $("warnings");
  warnings.replaceChildren();
  for (const code of report.quality.warnings) {
    const item = element("li", "warning", vocabulary.warnings[code] || words(code.toLowerCase()));
    item.dataset.code = code;
    warnings.append(item);
  }
  for (const [region, entry] of Object.entries(report.regions)) {
    if (entry.visible) continue;
    const reason = vocabulary.region_reasons[entry.reason] || "not read";
    warnings.append(element("li", "warning region", words(region) + ": " + reason));
  }
  if (!warnings.children.length) warnings.append(element("li", "ok", "No problems with the photo."));

  const recommendations = $("recommendations");
  recommendations.replaceChildren();
  for (const suggestion of report.recommendations) {
    const item = element("li", "suggestion");
    let title = "Every day";
    if (suggestion.concern) title = (vocabulary.concerns[suggestion.concern] || words(suggestion.concern)) +
      " (" + (vocabulary.severities[suggestion.severity] || suggestion.severity) + ")";
    else if (suggestion.skin_type) title = "For " + suggestion.skin_type + " skin";
    item.append(element("strong", "", title));
    const tips = element("ul", "tips");
    for (const tip of suggestion.tips) tips.append(element("li", "", tip));
    item.append(tips);
    recommendations.append(item);
  }
  $("result").hidden = false;
}

async function analyse(file) {
  if (!file) return;
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  $("error").hidden = true;
  setStatus("Analysing " + file.name + "…");
  document.body.classList.add("busy");
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch(API, { method: "POST", body: form, signal: controller.signal });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok || !body || body.error) {
      const error = (body && body.error) || {};
      showError(error.code || "HTTP " + response.status, error.message || "The service could not analyse this photo.");
      setStatus("");
      return;
    }
    await vocabularyLoaded;
    showReport(body);
    setStatus("Analysed " + file.name + ".");
  } catch (error) {
    if (error.name === "AbortError") return;
    showError("", "Could not reach the service: " + error.message);
    setStatus("");
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      document.body.classList.remove("busy");
    }
  }
}

function start() {
  const input = $("photo");
  const drop = $("drop");
  input.addEventListener("change", () => analyse(input.files[0]));
  // Dropping anywhere on the page analyses the photo instead of opening it in the tab.
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.target === document.documentElement || event.target === drop) drop.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) analyse(file);
  });
}

start();
