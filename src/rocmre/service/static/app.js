// rocmre web page: predict a relation, see the top-k as bars, add relations. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  head: null, // {start, end} character span when marked from a selection, else null (the name is located)
  tail: null,
  relations: [],
  modelType: null,
  negativeLabel: null,
  newNames: new Set(),
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const err = new Error((body && body.detail) || `${response.status} ${response.statusText}`);
    err.status = response.status;
    err.candidates = body && body.candidates;
    throw err;
  }
  return body;
}

// ---- entities ----------------------------------------------------------------------------------
const isWord = (ch) => /[\p{L}\p{N}_]/u.test(ch);

function selectionSpan() {
  const ta = $("text");
  let start = ta.selectionStart, end = ta.selectionEnd;
  const text = ta.value;
  if (start === end) return null;
  while (start < end && /\s/.test(text[start])) start++;
  while (end > start && /\s/.test(text[end - 1])) end--;
  // snap to whole words: the model works on tokens
  while (start > 0 && isWord(text[start - 1]) && isWord(text[start])) start--;
  while (end < text.length && isWord(text[end]) && isWord(text[end - 1])) end++;
  return start < end ? { start, end } : null;
}

function mark(role) {
  const span = selectionSpan();
  if (!span) {
    showError(`Select the ${role} in the sentence first, then click "mark as ${role}".`);
    return;
  }
  state[role] = span;
  $(role).value = $("text").value.slice(span.start, span.end);
  hideError();
  renderPreview();
}

function spanValid(role) {
  const span = state[role];
  return span && $("text").value.slice(span.start, span.end) === $(role).value;
}

// The server counts characters in Unicode code points; a JS string (and a selection) counts UTF-16 units, in
// which a character outside the BMP (an emoji, say) is two. Offsets are converted before they are sent.
function codePointIndex(text, index) {
  return Array.from(text.slice(0, index)).length;
}

function entityFor(role) {
  const name = $(role).value.trim();
  if (!spanValid(role)) return name;
  const text = $("text").value;
  return { name, char_start: codePointIndex(text, state[role].start), char_end: codePointIndex(text, state[role].end) };
}

function findSpan(role) {
  if (spanValid(role)) return state[role];
  const name = $(role).value.trim();
  if (!name) return null;
  const i = $("text").value.indexOf(name);
  return i >= 0 ? { start: i, end: i + name.length } : null;
}

function renderPreview() {
  const text = $("text").value;
  const preview = $("preview");
  preview.textContent = "";
  for (const role of ["head", "tail"]) {
    $(`${role}-note`).textContent = spanValid(role)
      ? `marked at characters ${codePointIndex(text, state[role].start)}–${codePointIndex(text, state[role].end)}`
      : ($(role).value.trim() ? "located by name" : "");
  }
  if (!text.trim()) return;
  const spans = [];
  for (const role of ["head", "tail"]) {
    const s = findSpan(role);
    if (s) spans.push({ ...s, role });
  }
  spans.sort((a, b) => a.start - b.start);
  let pos = 0;
  for (const s of spans) {
    if (s.start < pos) continue; // overlapping marks: show the first
    preview.append(text.slice(pos, s.start));
    preview.append(el("mark", { class: s.role }, text.slice(s.start, s.end), el("sup", { text: s.role })));
    pos = s.end;
  }
  preview.append(text.slice(pos));
}

// ---- image -------------------------------------------------------------------------------------
function onImage() {
  const file = $("image").files[0];
  const img = $("image-preview");
  if (img.src) URL.revokeObjectURL(img.src);
  if (file) {
    img.src = URL.createObjectURL(file);
    img.hidden = false;
    $("clear-image").hidden = false;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
    $("clear-image").hidden = true;
  }
}

// ---- predict -----------------------------------------------------------------------------------
function showError(message, candidates) {
  const box = $("error");
  box.textContent = message;
  if (candidates && candidates.length) {
    const list = el("ul");
    for (const c of candidates) list.append(el("li", { text: Array.isArray(c) ? `tokens ${c[0]}–${c[1]}` : c }));
    box.append(el("div", { text: "Candidates:" }), list);
  }
  box.hidden = false;
}

function hideError() { $("error").hidden = true; }

async function predict() {
  hideError();
  const text = $("text").value.trim() ? $("text").value : "";
  const request = {
    text,
    head: entityFor("head"),
    tail: entityFor("tail"),
    top_k: Math.max(1, Math.min(100, parseInt($("top-k").value, 10) || 3)),
  };
  if (!text || !$("head").value.trim() || !$("tail").value.trim()) {
    showError("Give a sentence, a head and a tail.");
    return;
  }
  const button = $("predict");
  button.disabled = true;
  button.textContent = "Predicting…";
  try {
    const file = $("image").files[0];
    let options;
    if (file) {
      const form = new FormData();
      form.append("request", JSON.stringify(request));
      form.append("image", file);
      options = { method: "POST", body: form };
    } else {
      options = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) };
    }
    renderResult(await api("/predict", options));
  } catch (err) {
    $("result").hidden = true;
    showError(err.message, err.candidates);
  } finally {
    button.disabled = false;
    button.textContent = "Predict";
  }
}

function renderResult(pred) {
  $("result-relation").textContent = pred.relation;
  $("result-none").hidden = pred.relation !== state.negativeLabel;
  $("result-score").textContent = `score ${pred.score.toFixed(3)}`;
  $("result-description").textContent = pred.description || "";
  const fmt = (e) => `${e.name} (${e.type})`;
  $("result-pair").textContent = `head: ${fmt(pred.head)} · tail: ${fmt(pred.tail)} · image: ` +
    (pred.has_image ? "used" : "none");
  $("result-k").textContent = pred.top_k.length;
  const bars = $("bars");
  bars.textContent = "";
  const scores = pred.top_k.map((c) => c.score);
  const hi = Math.max(...scores), lo = Math.min(...scores);
  const range = hi - lo;
  pred.top_k.forEach((c, i) => {
    // bars span the score range of the shown relations; the lowest keeps a visible stub
    const width = range > 1e-9 ? 8 + 92 * (c.score - lo) / range : 100;
    const row = el("div", { class: i === 0 ? "bar-row best" : "bar-row", title: c.description || "" },
      el("div", { class: "bar-label", text: c.relation }),
      el("div", { class: "bar-track" }, el("div", { class: "bar-fill", style: `width:${width.toFixed(1)}%` })),
      el("div", { class: "bar-value", text: c.score.toFixed(3) }));
    bars.append(row);
  });
  $("result").hidden = false;
}

// ---- relations ---------------------------------------------------------------------------------
function renderRelations() {
  const box = $("relations");
  const query = $("filter").value.trim().toLowerCase();
  box.textContent = "";
  const shown = state.relations.filter((r) => !query || r.name.toLowerCase().includes(query) ||
    r.descriptions.some((d) => d.toLowerCase().includes(query)));
  for (const r of shown) {
    const details = el("details", { class: state.newNames.has(r.name) ? "new" : "" });
    details.dataset.name = r.name;
    const n = r.descriptions.length;
    const k = r.examples || 0;
    const counts = (n ? `${n} description${n === 1 ? "" : "s"}` : "label only") +
      (k ? ` · ${k} example${k === 1 ? "" : "s"}` : "");
    details.append(el("summary", {}, el("span", { class: "name", text: r.name }),
      el("span", { class: "n", text: counts })));
    if (n) {
      const list = el("ul");
      for (const d of r.descriptions) list.append(el("li", { text: d }));
      details.append(list);
    }
    if (state.newNames.has(r.name)) details.open = true;
    box.append(details);
  }
  if (!shown.length) box.append(el("div", { class: "empty", text: "No relation matches." }));
  $("relation-count").textContent = state.relations.length;
}

async function loadRelations() {
  const data = await api("/relations");
  state.relations = data.relations;
  state.modelType = data.model_type;
  state.negativeLabel = data.negative_label;
  if (data.model_type !== "roc") {
    for (const id of ["new-name", "new-descriptions", "new-examples", "add-relation"]) $(id).disabled = true;
    const msg = $("add-message");
    msg.textContent = "This is a classification model: its label set is fixed.";
    msg.className = "message bad";
    msg.hidden = false;
  }
  renderRelations();
}

// Examples: one JSON object per line ({"text": ..., "head": ..., "tail": ...}); blank lines are skipped.
function parseExamples(value) {
  const examples = [];
  value.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new Error(`Example line ${i + 1} is not valid JSON: ${err.message}`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Error(`Example line ${i + 1}: give an object with text, head and tail.`);
    }
    examples.push(obj);
  });
  return examples;
}

async function addRelation(event) {
  event.preventDefault();
  const name = $("new-name").value.trim();
  const descriptions = $("new-descriptions").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const msg = $("add-message");
  msg.hidden = false;
  if (!name || !descriptions.length) {
    msg.className = "message bad";
    msg.textContent = "Give a name and at least one description.";
    return;
  }
  let examples;
  try {
    examples = parseExamples($("new-examples").value);
  } catch (err) {
    msg.className = "message bad";
    msg.textContent = err.message;
    return;
  }
  try {
    const out = await api("/relations", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ [name]: examples.length ? { descriptions, examples } : descriptions }),
    });
    state.newNames.add(name);
    msg.className = "message";
    msg.textContent = out.added.length ? `Added ${name}: the model now retrieves from ${out.relations} relations.`
      : `Added ${descriptions.length} description(s) to ${name}.`;
    $("new-name").value = "";
    $("new-descriptions").value = "";
    $("new-examples").value = "";
    $("filter").value = "";
    await Promise.all([loadRelations(), health()]);
    const added = document.querySelector(`#relations details[data-name="${CSS.escape(name)}"]`);
    if (added) $("relations").scrollTop = added.offsetTop - $("relations").offsetTop;
  } catch (err) {
    msg.className = "message bad";
    msg.textContent = err.message;
  }
}

async function health() {
  const status = $("status");
  try {
    const h = await api("/health");
    status.textContent = `${h.model_type === "roc" ? "ROC" : "classifier"} model · ${h.relations} relations`;
    status.className = "status ok";
  } catch (err) {
    status.textContent = "server unreachable";
    status.className = "status down";
  }
}

// ---- wiring ------------------------------------------------------------------------------------
$("mark-head").addEventListener("click", () => mark("head"));
$("mark-tail").addEventListener("click", () => mark("tail"));
for (const id of ["text", "head", "tail"]) $(id).addEventListener("input", renderPreview);
$("image").addEventListener("change", onImage);
$("clear-image").addEventListener("click", () => { $("image").value = ""; onImage(); });
$("predict").addEventListener("click", predict);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict(); });
$("add-form").addEventListener("submit", addRelation);
$("filter").addEventListener("input", renderRelations);
renderPreview();
health();
loadRelations().catch((err) => showError(`Cannot load relations: ${err.message}`));
