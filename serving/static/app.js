// Intake page: scores the ticket while it is typed and records the operator's choice.
// Every text that comes from a ticket or the API is written with textContent, never
// as markup.
"use strict";

const SCORE_DELAY_MS = 350;
const KEY_STORAGE = "triage.apiKey";
const OPERATOR_STORAGE = "triage.operator";
const FIELD_LABELS = {
  deployment: "部署类型",
  user_reported: "有无用户申告",
  anomaly_detail: "异常类型细项",
};
const BASE_FIELDS = ["department", "channel", "system"];

const state = {
  model: null,
  labels: { categories: [], root_causes: [], escalation: false },
  extraFields: [],
  answer: null, // the scoring response on screen
  answerKey: null, // the request body that produced it
  pendingKey: null,
  controller: null,
  sequence: 0,
  timer: null,
  picked: { category: false, root_cause: false, escalation: false },
  feedbackRequestId: null, // reused when a failed submission is retried
  feedbackKey: null,
};

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function percent(probability) {
  return `${(probability * 100).toFixed(probability >= 0.995 || probability < 0.1 ? 1 : 0)}%`;
}

function randomId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newTicketId() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  const stamp =
    `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}` +
    `${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  return `WEB-${stamp}-${randomId().slice(0, 4).toUpperCase()}`;
}

// Status line ---------------------------------------------------------------

function showStatus(message, kind = "info") {
  const status = $("status");
  status.textContent = message;
  status.dataset.kind = kind;
}

// API -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d.field ? `${d.field}: ${d.message || d.msg}` : d.message || d.msg)).join("；");
  }
  return JSON.stringify(detail);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: options.signal,
  });
  let payload = null;
  try {
    payload = await response.json();
  } catch (err) {
    payload = null;
  }
  if (response.status === 401 || response.status === 403) {
    $("key-panel").open = true;
    throw new ApiError(response.status, "服务需要有效的 API 密钥：请在右上角输入密钥后保存。");
  }
  if (!response.ok) {
    let detail = response.statusText;
    if (payload && Array.isArray(payload.errors) && payload.errors.length) detail = detailText(payload.errors);
    else if (payload && payload.detail !== undefined) detail = detailText(payload.detail);
    throw new ApiError(response.status, `请求失败（${response.status}）：${detail}`);
  }
  return payload;
}

// Start-up ------------------------------------------------------------------

function fillDatalist(id, values) {
  const list = $(id);
  list.replaceChildren(...(values || []).map((v) => {
    const option = document.createElement("option");
    option.value = v;
    return option;
  }));
}

function buildExtraFields(fields, knownValues) {
  const box = $("extra-fields");
  box.replaceChildren();
  state.extraFields = fields;
  for (const name of fields) {
    const wrap = element("div", "field");
    const label = element("label", null, FIELD_LABELS[name] || name);
    label.htmlFor = `extra-${name}`;
    const input = element("input");
    input.id = `extra-${name}`;
    input.maxLength = 200;
    input.setAttribute("list", `extra-${name}-values`);
    input.addEventListener("input", scheduleScore);
    const list = element("datalist");
    list.id = `extra-${name}-values`;
    wrap.append(label, input, list);
    box.append(wrap);
    fillDatalist(list.id, knownValues[name]);
  }
}

function fillCauseSelect() {
  const select = $("cause-other");
  const placeholder = element("option", null, "选择根因…");
  placeholder.value = "";
  const options = state.labels.root_causes.map((cause) => {
    const option = element("option", null, cause.name === cause.code ? cause.name : `${cause.name}（${cause.code}）`);
    option.value = cause.code;
    return option;
  });
  select.replaceChildren(placeholder, ...options);
}

async function loadModel() {
  try {
    const [model, labels] = await Promise.all([api("/v1/model"), api("/v1/labels")]);
    state.model = model;
    state.labels = labels;
    const version = model.version ? ` 版本 ${model.version}` : "";
    const alias = model.alias ? `（${model.alias}）` : "";
    $("model-info").textContent = `模型 ${model.name}${version}${alias}`;
    const known = model.known_values || {};
    for (const name of BASE_FIELDS) fillDatalist(`${name}-values`, known[name]);
    const categorical = (model.feature_fields && model.feature_fields.categorical) || [];
    buildExtraFields(categorical.filter((f) => !BASE_FIELDS.includes(f)), known);
    fillCauseSelect();
    showStatus("就绪：输入问题描述即可获得建议。");
    if ($("description").value.trim()) scheduleScore();
  } catch (err) {
    $("model-info").textContent = "模型不可用";
    showStatus(err.message || String(err), "error");
  }
}

// Scoring -------------------------------------------------------------------

function ticketBody() {
  const value = (id) => {
    const text = $(id).value.trim();
    return text === "" ? null : text;
  };
  const extra = {};
  for (const name of state.extraFields) extra[name] = value(`extra-${name}`);
  return {
    ticket_id: value("ticket-id"),
    title: $("title").value,
    description: $("description").value,
    department: value("department"),
    channel: value("channel"),
    system: value("system"),
    extra,
    include: ["similar", "reasons"],
  };
}

// The suggestion panel is aria-busy from the first keystroke until the answer to
// the current input is on screen.
function scheduleScore() {
  clearTimeout(state.timer);
  setBusy(true);
  state.timer = setTimeout(() => {
    state.timer = null;
    scoreNow();
  }, SCORE_DELAY_MS);
}

function settle() {
  if (state.timer === null && state.pendingKey === null) setBusy(false);
}

async function scoreNow() {
  clearTimeout(state.timer);
  state.timer = null;
  const body = ticketBody();
  if (!body.description.trim() && !body.title.trim()) {
    clearSuggestion();
    return;
  }
  const key = JSON.stringify(body);
  if (key === state.pendingKey) return;
  if (key === state.answerKey) {
    settle();
    return;
  }
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  const sequence = ++state.sequence;
  state.controller = controller;
  state.pendingKey = key;
  setBusy(true);
  try {
    const answer = await api("/v1/score", { method: "POST", body, signal: controller.signal });
    if (sequence !== state.sequence) return;
    state.answer = answer;
    state.answerKey = key;
    renderAnswer(answer);
    if ($("status").dataset.kind === "error") showStatus("");
  } catch (err) {
    if (err.name === "AbortError" || sequence !== state.sequence) return;
    showStatus(err.message || String(err), "error");
  } finally {
    if (sequence === state.sequence) {
      state.pendingKey = null;
      settle();
    }
  }
}

function setBusy(busy) {
  $("scoring").hidden = !busy;
  $("suggestion").setAttribute("aria-busy", busy ? "true" : "false");
}

function clearSuggestion() {
  if (state.controller) state.controller.abort();
  clearTimeout(state.timer);
  state.timer = null;
  state.sequence += 1;
  state.answer = null;
  state.answerKey = null;
  state.pendingKey = null;
  state.picked = { category: false, root_cause: false, escalation: false };
  setBusy(false);
  for (const id of ["review-banner", "escalation", "category-group", "cause-group", "escalation-choice", "similar", "reasons"]) {
    $(id).hidden = true;
  }
  $("category-options").replaceChildren();
  $("cause-options").replaceChildren();
  $("empty-state").hidden = false;
  updateSubmit();
}

// Rendering -----------------------------------------------------------------

function categoryProbabilities(answer) {
  const probabilities = { ...(answer.probabilities || {}) };
  for (const item of [answer.category, ...(answer.alternatives || [])]) {
    if (item && probabilities[item.code] === undefined) probabilities[item.code] = item.probability;
  }
  return probabilities;
}

function categoryName(code) {
  const known = state.labels.categories.find((c) => c.code === code);
  return known ? known.name : code;
}

function causeName(code) {
  const known = state.labels.root_causes.find((c) => c.code === code);
  return known ? known.name : code;
}

function renderAnswer(answer) {
  $("empty-state").hidden = true;
  $("review-banner").hidden = !answer.needs_review;
  $("suggestion").classList.toggle("needs-review", Boolean(answer.needs_review));
  renderCategories(answer);
  renderCauses(answer);
  renderEscalation(answer);
  renderSimilar(answer.similar);
  renderReasons(answer.reasons);
  updateSubmit();
}

function renderCategories(answer) {
  const probabilities = categoryProbabilities(answer);
  const suggested = answer.category ? answer.category.code : null;
  const codes = state.labels.categories.map((c) => c.code);
  for (const code of Object.keys(probabilities)) if (!codes.includes(code)) codes.push(code);
  const current = state.picked.category ? checkedValue("category") : suggested;

  const rows = codes.map((code) => {
    const probability = probabilities[code] || 0;
    const id = `category-${code}`;
    const row = element("div", "choice bar-choice");
    const input = element("input");
    input.type = "radio";
    input.name = "category";
    input.id = id;
    input.value = code;
    input.checked = code === current;
    input.addEventListener("change", () => {
      state.picked.category = true;
      updateSubmit();
    });
    const label = element("label");
    label.htmlFor = id;
    const head = element("span", "bar-head");
    head.append(element("span", "bar-name", categoryName(code)));
    if (code === suggested) head.append(element("span", "badge", "建议"));
    head.append(element("span", "bar-value", percent(probability)));
    const track = element("span", "bar-track");
    const fill = element("span", `bar-fill cat-${codes.indexOf(code) % 6}`);
    fill.style.width = `${Math.max(0.5, probability * 100).toFixed(1)}%`;
    track.append(fill);
    label.append(head, track);
    row.append(input, label);
    return row;
  });
  $("category-options").replaceChildren(...rows);
  $("category-group").hidden = rows.length === 0;
}

function renderCauses(answer) {
  const causes = answer.root_causes || [];
  const suggested = causes.length ? causes[0].code : null;
  const previous = state.picked.root_cause ? selectedCause() : suggested;
  const cards = causes.map((cause, index) => {
    const id = `cause-${index}`;
    const card = element("div", "choice cause-card");
    const input = element("input");
    input.type = "radio";
    input.name = "root_cause";
    input.id = id;
    input.value = cause.code;
    input.checked = cause.code === previous;
    input.addEventListener("change", () => {
      state.picked.root_cause = true;
      $("cause-other").value = "";
      updateSubmit();
    });
    const label = element("label");
    label.htmlFor = id;
    const head = element("span", "cause-head");
    head.append(element("span", "cause-name", cause.name || causeName(cause.code)));
    if (index === 0) head.append(element("span", "badge", "建议"));
    head.append(element("span", "cause-value", percent(cause.probability)));
    label.append(head);
    if (cause.measures && cause.measures.length) {
      const list = element("ul", "measures");
      for (const measure of cause.measures) list.append(element("li", null, measure));
      label.append(list);
    }
    card.append(input, label);
    return card;
  });
  $("cause-options").replaceChildren(...cards);
  const inTop = causes.some((c) => c.code === previous);
  const other = $("cause-other");
  if (previous && !inTop) {
    other.value = previous;
    $("cause-other-radio").checked = true;
  } else {
    other.value = "";
    $("cause-other-radio").checked = false;
  }
  $("cause-group").hidden = causes.length === 0 && state.labels.root_causes.length === 0;
}

function renderEscalation(answer) {
  const box = $("escalation");
  const escalation = answer.escalation;
  if (!escalation) {
    box.hidden = true;
    $("escalation-choice").hidden = true;
    return;
  }
  box.hidden = false;
  box.classList.toggle("warn", Boolean(escalation.flag));
  box.textContent = escalation.flag
    ? `升级风险高：${percent(escalation.probability)}（阈值 ${percent(escalation.threshold)}），建议按紧急抢修流程处理。`
    : `升级风险 ${percent(escalation.probability)}，低于阈值 ${percent(escalation.threshold)}。`;
  $("escalation-choice").hidden = false;
  if (!state.picked.escalation) $("escalation-check").checked = Boolean(escalation.flag);
}

function renderSimilar(similar) {
  const box = $("similar");
  if (!Array.isArray(similar) || similar.length === 0) {
    box.hidden = true;
    return;
  }
  const items = similar.map((ticket) => {
    const item = element("li", "similar-item");
    const head = element("div", "similar-head");
    head.append(element("span", "similar-id", ticket.ticket_id || "（无编号）"));
    const category = ticket.category && typeof ticket.category === "object" ? ticket.category.code : ticket.category;
    if (category) head.append(element("span", "tag", categoryName(category)));
    const cause = ticket.root_cause && typeof ticket.root_cause === "object" ? ticket.root_cause.code : ticket.root_cause;
    if (cause) head.append(element("span", "tag", causeName(cause)));
    const score = ticket.similarity ?? ticket.score;
    if (typeof score === "number") head.append(element("span", "similar-score", `相似度 ${percent(score)}`));
    item.append(head);
    const text = ticket.description || ticket.text || ticket.title;
    if (text) item.append(element("p", "similar-text", text));
    return item;
  });
  $("similar-list").replaceChildren(...items);
  box.hidden = false;
}

function reasonWords(reasons) {
  if (!Array.isArray(reasons)) return [];
  return reasons
    .map((r) => (typeof r === "string" ? r : r && (r.token || r.word || r.text || r.term)))
    .filter((w) => typeof w === "string" && w.trim() !== "");
}

function renderReasons(reasons) {
  const box = $("reasons");
  const words = reasonWords(reasons);
  if (words.length === 0) {
    box.hidden = true;
    return;
  }
  // Mark each reason word in the description, longest first so that a word inside
  // a longer one does not split it. Text nodes and <mark> elements only.
  const text = $("description").value;
  const ordered = [...new Set(words)].sort((a, b) => b.length - a.length);
  const nodes = [];
  let position = 0;
  while (position < text.length) {
    let match = null;
    let at = text.length;
    for (const word of ordered) {
      const found = text.indexOf(word, position);
      if (found !== -1 && found < at) {
        at = found;
        match = word;
      }
    }
    if (match === null) break;
    if (at > position) nodes.push(document.createTextNode(text.slice(position, at)));
    nodes.push(element("mark", null, match));
    position = at + match.length;
  }
  if (position < text.length) nodes.push(document.createTextNode(text.slice(position)));
  if (!nodes.some((n) => n.nodeName === "MARK")) {
    nodes.length = 0;
    for (const word of ordered) nodes.push(element("mark", null, word), document.createTextNode(" "));
  }
  $("reason-text").replaceChildren(...nodes);
  box.hidden = false;
}

// Choosing and recording ----------------------------------------------------

function checkedValue(name) {
  const input = document.querySelector(`input[name="${name}"]:checked`);
  return input ? input.value : null;
}

function selectedCause() {
  if ($("cause-other-radio").checked) return $("cause-other").value || null;
  return checkedValue("root_cause");
}

function suggestedLabels(answer) {
  return {
    category: answer.category ? answer.category.code : null,
    root_cause: answer.root_causes && answer.root_causes.length ? answer.root_causes[0].code : null,
    escalation: answer.escalation ? Boolean(answer.escalation.flag) : null,
  };
}

function chosenLabels(answer) {
  return {
    category: checkedValue("category"),
    root_cause: selectedCause(),
    escalation: answer.escalation ? $("escalation-check").checked : null,
  };
}

function isCorrection(answer) {
  const suggested = suggestedLabels(answer);
  const chosen = chosenLabels(answer);
  return Object.keys(chosen).some((k) => chosen[k] !== null && chosen[k] !== suggested[k]);
}

function updateSubmit() {
  const button = $("submit");
  const answer = state.answer;
  button.disabled = !answer;
  button.textContent = answer && isCorrection(answer) ? "提交更正" : "采纳建议";
  button.classList.toggle("correction", Boolean(answer && isCorrection(answer)));
}

async function submitFeedback() {
  const operator = $("operator").value.trim();
  if (!operator) {
    showStatus("请先填写操作员工号，再提交。", "error");
    $("operator").focus();
    return;
  }
  const currentKey = JSON.stringify(ticketBody());
  if (!state.answer || state.answerKey !== currentKey) {
    showStatus("建议正在更新，请确认新的建议后再提交。");
    scoreNow();
    return;
  }
  const answer = state.answer;
  if ($("cause-other-radio").checked && !$("cause-other").value) {
    showStatus("请在“其他根因”中选择一项，或选择上面列出的根因。", "error");
    $("cause-other").focus();
    return;
  }
  const body = {
    ticket_id: $("ticket-id").value.trim() || answer.ticket_id,
    model: { name: answer.model.name, version: answer.model.version },
    score_request_id: answer.request_id,
    suggested: suggestedLabels(answer),
    chosen: chosenLabels(answer),
    operator_id: operator,
  };
  // A retry of the same entry keeps its request id, so the store records it once.
  const feedbackKey = JSON.stringify(body);
  if (state.feedbackKey !== feedbackKey) {
    state.feedbackKey = feedbackKey;
    state.feedbackRequestId = randomId();
  }
  body.request_id = state.feedbackRequestId;
  if (!body.ticket_id) {
    showStatus("请填写工单编号。", "error");
    $("ticket-id").focus();
    return;
  }
  const button = $("submit");
  button.disabled = true;
  try {
    const result = await api("/v1/feedback", { method: "POST", body });
    const what = result.accepted ? "已采纳建议" : "已记录更正";
    showStatus(`${what}：工单 ${result.ticket_id}，反馈编号 ${result.feedback_id}。可以登记下一张工单。`, "ok");
    state.feedbackKey = null;
    state.feedbackRequestId = null;
    startNextTicket();
  } catch (err) {
    const retry = err.status === undefined || err.status >= 500 ? "请重试，重试不会重复记录。" : "";
    showStatus(`${err.message || err}${retry ? " " + retry : ""}`, "error");
    button.disabled = false;
  }
}

function startNextTicket() {
  for (const id of ["title", "description", "department", "channel", "system"]) $(id).value = "";
  for (const name of state.extraFields) $(`extra-${name}`).value = "";
  $("ticket-id").value = newTicketId();
  $("escalation-check").checked = false;
  clearSuggestion();
  $("description").focus();
}

// Wiring --------------------------------------------------------------------

function saveKey() {
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("api-key").value = "";
  $("key-panel").open = false;
  showStatus(key ? "密钥已保存在本标签页。" : "密钥已清除。");
  state.answerKey = null;
  loadModel();
}

function wire() {
  $("ticket-id").value = newTicketId();
  $("operator").value = sessionStorage.getItem(OPERATOR_STORAGE) || "";
  $("operator").addEventListener("change", () => {
    sessionStorage.setItem(OPERATOR_STORAGE, $("operator").value.trim());
  });
  for (const id of ["title", "description", "department", "channel", "system", "ticket-id"]) {
    $(id).addEventListener("input", scheduleScore);
  }
  $("description").addEventListener("keydown", (event) => {
    // Enter while an input method is composing picks a candidate; leave it alone.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submitFeedback();
    }
  });
  $("cause-other").addEventListener("change", () => {
    $("cause-other-radio").checked = Boolean($("cause-other").value);
    state.picked.root_cause = true;
    updateSubmit();
  });
  $("cause-other-radio").addEventListener("change", () => {
    state.picked.root_cause = true;
    $("cause-other").focus();
    updateSubmit();
  });
  $("escalation-check").addEventListener("change", () => {
    state.picked.escalation = true;
    updateSubmit();
  });
  $("intake").addEventListener("submit", (event) => {
    event.preventDefault();
    submitFeedback();
  });
  // Enter on a category, cause or escalation choice submits too, as it does in
  // the text fields, so a correction needs no mouse.
  $("suggestion").addEventListener("keydown", (event) => {
    const input = event.target;
    if (event.key === "Enter" && input.matches && input.matches("input[type=radio], input[type=checkbox]")) {
      event.preventDefault();
      submitFeedback();
    }
  });
  $("reset").addEventListener("click", startNextTicket);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveKey();
  });
  $("clear-key").addEventListener("click", () => {
    $("api-key").value = "";
    saveKey();
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", wire);
