// pulmo's review page: signs in (cookie session), shows the analysed series through
// WADO-RS rendered with the finding outlines (and, for a study compared with a prior, the
// matched nodule on the prior's slice beside it), and records the reader's decisions through
// the review API. Plain JS, no libraries, nothing loaded from elsewhere.
"use strict";

const study = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
const state = { csrf: null, rows: [], selected: -1, slices: [], slice: 0, zoom: 1, pan: [0, 0], report: null, prior: null, priorDraw: 0 };
const enc = encodeURIComponent;

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  return { status: response.status, json };
}

async function start() {
  const session = await api("GET", "/api/v1/session");
  if (session.status !== 200) return showSignIn();
  signedIn(session.json);
}

function showSignIn(message) {
  $("review").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const answer = await api("POST", "/api/v1/session", { token: $("token").value });
  $("token").value = "";
  if (answer.status === 200) return signedIn(answer.json);
  showSignIn(answer.status === 403 ? "This token may not review (it lacks the review role)."
    : answer.status === 401 ? "Unknown token." : "Could not sign in (" + answer.status + ").");
}

async function signedIn(session) {
  state.csrf = session.csrf_token;
  $("who").textContent = "Reader: " + session.reader;
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("review").hidden = false;
  await load();
}

async function signOut() {
  await api("DELETE", "/api/v1/session");
  state.csrf = null;
  showSignIn("Signed out.");
}

async function load() {
  const answer = await api("GET", "/api/v1/studies/" + encodeURIComponent(study) + "/review");
  if (answer.status === 401) return showSignIn();
  if (answer.status !== 200) {
    $("status").textContent = answer.json ? answer.json.error : "could not load the review (" + answer.status + ")";
    return;
  }
  show(answer.json);
  // The prior's panel takes its place before the current slice is first fitted to its frame.
  if (state.report && state.report.comparison) $("prior").hidden = false;
  if (state.report && state.slices.length === 0) await loadSlices(state.report.series_instance_uid);
  if (state.report && state.report.comparison && !state.prior) await loadPrior(state.report.comparison);
  if (state.selected < 0 && state.rows.length) select(0);
}

// Calls (at or above the operating point) first, then the candidates below it.
function show(body) {
  const rows = [];
  for (const report of body.reports) {
    const calls = report.findings.filter((f) => f.score >= report.operating_score);
    const candidates = report.findings.filter((f) => f.score < report.operating_score);
    for (const f of calls) rows.push({ report, finding: f, call: true });
    for (const f of candidates) rows.push({ report, finding: f, call: false });
  }
  state.report = body.reports[0] || null;
  state.rows = rows;
  const status = body.review;
  $("status").textContent = "(" + status.status + (status.reader ? ", signed by " + status.reader + " at " + status.signed_at : "") + ")";
  const tbody = $("findings").querySelector("tbody");
  tbody.textContent = "";
  let candidatesShown = false;
  rows.forEach((row, n) => {
    if (!row.call && !candidatesShown) {
      candidatesShown = true;
      const group = tbody.insertRow();
      group.className = "group";
      const th = document.createElement("th");
      th.colSpan = 9;
      th.scope = "rowgroup";
      th.textContent = "Candidates below the operating point (" + row.report.operating_score + ")";
      group.appendChild(th);
    }
    tbody.appendChild(findingRow(row, n));
  });
  const resolved = (state.report && state.report.resolved) || [];
  $("resolved").hidden = resolved.length === 0;
  $("resolved").textContent = "Resolved since the prior study: " +
    resolved.map((p) => "finding " + p.finding_id + " (" + p.diameter_mm.toFixed(1) + " mm)").join(", ") + ".";
  if (state.selected >= 0) highlight();
}

// A finding's change since the prior study, as the table shows it.
function changeText(f) {
  if (!f.change) return "—";
  let text = f.change;
  if (f.prior) {
    text += " (" + f.prior.diameter_mm.toFixed(1) + " → " + f.diameter_mm.toFixed(1) + " mm";
    if (f.volume_change_percent != null) {
      text += ", volume " + (f.volume_change_percent >= 0 ? "+" : "") + Math.round(f.volume_change_percent) + " %";
    }
    text += ")";
  }
  if (f.volume_doubling_days != null) text += ", doubling time " + Math.round(f.volume_doubling_days) + " days";
  return text;
}

function cell(tr, text) {
  const td = tr.insertCell();
  td.textContent = text;
  return td;
}

function findingRow(row, n) {
  const f = row.finding;
  const review = f.review;
  const tr = document.createElement("tr");
  tr.className = "finding";
  tr.dataset.index = n;
  tr.addEventListener("click", (e) => { if (!e.target.closest("button,select,input")) select(n); });
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = f.id;
  tr.appendChild(th);
  cell(tr, f.diameter_mm.toFixed(1) + " mm");
  cell(tr, Math.round(f.volume_mm3) + " mm³");
  cell(tr, f.type);
  cell(tr, f.score.toFixed(2));
  cell(tr, f.lung_rads);
  cell(tr, changeText(f)).className = "change";
  const decision = cell(tr, "");
  decision.className = "decision";
  const verdict = review ? review.verdict : null;
  for (const [value, label, cls] of [["accepted", "Accept", "accept"], ["rejected", "Reject", "reject"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = cls;
    button.textContent = label;
    button.setAttribute("aria-label", label + " finding " + f.id);
    button.setAttribute("aria-pressed", String(verdict === value));
    button.addEventListener("click", () => { select(n, false); decide(n, value); });
    decision.appendChild(button);
  }
  const type = document.createElement("select");
  type.setAttribute("aria-label", "Type of finding " + f.id);
  for (const t of ["solid", "part-solid", "ground-glass"]) {
    const option = document.createElement("option");
    option.value = t;
    option.textContent = t + (t === f.type ? " (model)" : "");
    type.appendChild(option);
  }
  type.value = (review && review.type) || f.type;
  type.addEventListener("change", () => { if (verdictOf(n)) decide(n, verdictOf(n)); });
  decision.appendChild(type);
  const comment = document.createElement("input");
  comment.type = "text";
  comment.maxLength = 2000;
  comment.value = (review && review.comment) || "";
  comment.setAttribute("aria-label", "Comment on finding " + f.id);
  comment.addEventListener("change", () => { if (verdictOf(n)) decide(n, verdictOf(n)); });
  cell(tr, "").appendChild(comment);
  return tr;
}

function rowElement(n) {
  return $("findings").querySelector('tr.finding[data-index="' + n + '"]');
}

function verdictOf(n) {
  const review = state.rows[n].finding.review;
  return review ? review.verdict : null;
}

async function decide(n, verdict) {
  const row = state.rows[n];
  const tr = rowElement(n);
  const type = tr.querySelector("select").value;
  const comment = tr.querySelector("input").value.trim();
  const body = { verdict };
  if (type !== row.finding.type) body.type = type;
  if (comment) body.comment = comment;
  const series = state.rows.some((r) => r.report !== row.report) ? "?series=" + encodeURIComponent(row.report.series_instance_uid) : "";
  const path = "/api/v1/studies/" + encodeURIComponent(study) + "/findings/" + row.finding.id + "/review" + series;
  const answer = await api("PUT", path, body);
  if (answer.status === 401) return showSignIn("Your session ended; sign in again.");
  if (answer.status !== 200) {
    $("sign-result").textContent = "Could not record the decision: " + (answer.json ? answer.json.error : answer.status);
    return;
  }
  show(answer.json);
  $("sign-result").textContent = "Finding " + row.finding.id + " " + verdict + ".";
}

async function sign() {
  const answer = await api("POST", "/api/v1/studies/" + encodeURIComponent(study) + "/review/sign");
  if (answer.status === 401) return showSignIn("Your session ended; sign in again.");
  if (answer.status !== 200) {
    $("sign-result").textContent = "Could not sign: " + (answer.json ? answer.json.error : answer.status);
    return;
  }
  $("sign-result").textContent = "Signed by " + answer.json.reader + " at " + answer.json.signed_at +
    ": " + answer.json.accepted + " accepted finding(s) sent to the PACS as a verified report.";
  await load();
}

// The series' slices, ordered by Instance Number.
async function loadSlices(series) {
  const path = "/dicomweb/studies/" + encodeURIComponent(study) + "/series/" + encodeURIComponent(series) + "/instances";
  const answer = await api("GET", path);
  if (answer.status !== 200 || !Array.isArray(answer.json)) return;
  const value = (item, tag) => (item[tag] && item[tag].Value ? item[tag].Value[0] : null);
  state.slices = answer.json
    .map((i) => ({ sop: value(i, "00080018"), number: Number(value(i, "00200013") || 0) }))
    .sort((a, b) => a.number - b.number);
  state.series = series;
  showSlice(Math.floor(state.slices.length / 2));
}

function showSlice(k) {
  if (!state.slices.length) return;
  state.slice = Math.max(0, Math.min(state.slices.length - 1, k));
  const s = state.slices[state.slice];
  const img = $("slice");
  img.alt = "CT slice " + (state.slice + 1) + " of " + state.slices.length;
  img.src = "/dicomweb/studies/" + encodeURIComponent(study) + "/series/" + encodeURIComponent(state.series) +
    "/instances/" + encodeURIComponent(s.sop) + "/rendered?window=" + $("window").value;
  $("slice-label").textContent = "Slice " + (state.slice + 1) + " / " + state.slices.length;
}

// The selected finding's outline: a circle of its long axis around its centre, on the
// slice through its centre.
function drawOutline() {
  const img = $("slice");
  const canvas = $("outline");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const row = state.rows[state.selected];
  if (!row || !state.slices.length) return;
  const f = row.finding;
  if (state.slices[state.slice].sop !== f.sop_instance_uid) return;
  const spacing = row.report.series.spacing_mm[0] || 1;
  const radius = Math.max(3, f.long_axis_mm / 2 / spacing + 2);
  ctx.strokeStyle = verdictOf(state.selected) === "rejected" ? "#ff5050" : "#ffd000";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  ctx.arc(f.center_voxel[0] + 0.5, f.center_voxel[1] + 0.5, radius, 0, 2 * Math.PI);
  ctx.stroke();
  ctx.fillStyle = ctx.strokeStyle;
  ctx.font = "12px sans-serif";
  ctx.fillText(String(f.id), f.center_voxel[0] + radius + 2, f.center_voxel[1] - radius);
}

// The prior study this one was compared with: its report, for the matched findings' slices.
async function loadPrior(comparison) {
  const answer = await api("GET", "/api/v1/studies/" + enc(comparison.prior_study_instance_uid) + "/report");
  const reports = answer.status === 200 && answer.json ? answer.json.reports || [] : [];
  const report = reports.find((r) => r.series_instance_uid === comparison.prior_series_instance_uid) || null;
  state.prior = { comparison, report };
  drawPrior();
}

// Beside the current slice: the selected finding's match on the prior study's slice through
// its centre, outlined, or why there is none.
function drawPrior() {
  const prior = state.prior;
  if (!prior) return;
  const canvas = $("prior-image");
  const ctx = canvas.getContext("2d");
  const token = ++state.priorDraw;
  const say = (text) => {
    $("prior-label").textContent = text;
    canvas.setAttribute("aria-label", text);
  };
  const blank = (text) => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    delete canvas.dataset.sop;
    say(text);
  };
  const of = "Prior study of " + (prior.comparison.prior_study_date || "an earlier date");
  const row = state.rows[state.selected];
  if (!row) return blank(of);
  const f = row.finding;
  if (!f.prior) return blank(of + ": finding " + f.id + " has no match there (" + (f.change || "not compared") + ")");
  const caption = of + ": finding " + f.prior.finding_id + ", " + f.prior.diameter_mm.toFixed(1) +
    " mm (now finding " + f.id + ", " + f.diameter_mm.toFixed(1) + " mm, " + f.change + ")";
  const match = prior.report && prior.report.findings.find((p) => p.id === f.prior.finding_id);
  if (!match) return blank(caption + "; its report is not held here");
  const image = new Image();
  image.onload = () => {
    if (token !== state.priorDraw) return;
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    ctx.drawImage(image, 0, 0);
    const spacing = prior.report.series.spacing_mm[0] || 1;
    const radius = Math.max(3, match.long_axis_mm / 2 / spacing + 2);
    ctx.strokeStyle = "#40a0ff";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.arc(match.center_voxel[0] + 0.5, match.center_voxel[1] + 0.5, radius, 0, 2 * Math.PI);
    ctx.stroke();
    canvas.dataset.sop = match.sop_instance_uid;
    say(caption + ", outlined on its slice");
  };
  image.onerror = () => { if (token === state.priorDraw) blank(caption + "; its slice could not be loaded (purged?)"); };
  image.src = "/dicomweb/studies/" + enc(prior.comparison.prior_study_instance_uid) + "/series/" +
    enc(prior.comparison.prior_series_instance_uid) + "/instances/" + enc(match.sop_instance_uid) +
    "/rendered?window=" + $("window").value;
}

function select(n, jump = true) {
  if (n < 0 || n >= state.rows.length) return;
  state.selected = n;
  highlight();
  if (jump) {
    const f = state.rows[n].finding;
    const k = state.slices.findIndex((s) => s.sop === f.sop_instance_uid);
    if (k >= 0) showSlice(k);
  }
  drawOutline();
  drawPrior();
}

function highlight() {
  for (const tr of $("findings").querySelectorAll("tr.finding")) {
    const on = Number(tr.dataset.index) === state.selected;
    tr.classList.toggle("selected", on);
    tr.setAttribute("aria-selected", String(on));
    if (on) tr.scrollIntoView({ block: "nearest" });
  }
}

function applyTransform() {
  $("stage").style.transform = "translate(" + state.pan[0] + "px," + state.pan[1] + "px) scale(" + state.zoom + ")";
}

function fit() {
  const frame = $("frame");
  const img = $("slice");
  if (!img.naturalWidth) return;
  state.zoom = Math.min(frame.clientWidth / img.naturalWidth, frame.clientHeight / img.naturalHeight);
  state.pan = [(frame.clientWidth - img.naturalWidth * state.zoom) / 2, (frame.clientHeight - img.naturalHeight * state.zoom) / 2];
  applyTransform();
}

function zoomBy(factor) {
  state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
  applyTransform();
}

function keys(event) {
  if (event.target.closest("input,select,textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const handled = {
    j: () => select(Math.min(state.rows.length - 1, state.selected + 1)),
    k: () => select(Math.max(0, state.selected - 1)),
    a: () => state.selected >= 0 && decide(state.selected, "accepted"),
    r: () => state.selected >= 0 && decide(state.selected, "rejected"),
    ArrowUp: () => showSlice(state.slice - 1),
    ArrowDown: () => showSlice(state.slice + 1),
    "+": () => zoomBy(1.25),
    "-": () => zoomBy(0.8),
  }[event.key];
  if (handled) {
    event.preventDefault();
    handled();
  }
}

function setUp() {
  $("sign-in").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("sign").addEventListener("click", sign);
  $("window").addEventListener("change", () => { showSlice(state.slice); drawPrior(); });
  $("zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("zoom-reset").addEventListener("click", fit);
  $("prev-slice").addEventListener("click", () => showSlice(state.slice - 1));
  $("next-slice").addEventListener("click", () => showSlice(state.slice + 1));
  let fitted = false;
  $("slice").addEventListener("load", () => {
    if (!fitted) { fitted = true; fit(); }
    drawOutline();
  });
  const frame = $("frame");
  frame.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? 1.1 : 0.9);
    else showSlice(state.slice + Math.sign(e.deltaY));
  }, { passive: false });
  let drag = null;
  frame.addEventListener("pointerdown", (e) => { drag = [e.clientX - state.pan[0], e.clientY - state.pan[1]]; frame.setPointerCapture(e.pointerId); });
  frame.addEventListener("pointermove", (e) => { if (drag) { state.pan = [e.clientX - drag[0], e.clientY - drag[1]]; applyTransform(); } });
  frame.addEventListener("pointerup", () => { drag = null; });
  document.addEventListener("keydown", keys);
  start();
}

setUp();
