// Write With Transformer: a plain textarea in which Tab asks the server for three continuations of the text
// before the cursor. They stream in over server-sent events; Up/Down and Enter (or a click) insert one at the
// cursor, Esc dismisses them. The editor never waits for the model: typing or moving the cursor dismisses the
// suggestions and aborts their request (the server stops generating for a disconnected stream).
"use strict";

const SUGGESTION_COUNT = 3;
const GAP_PX = 6; // between the caret's line and the suggestion list
const LIST_MAX_WIDTH_PX = 520;
const STORED = {
  apiKey: "tinygpt.editor.apiKey",
  maxTokens: "tinygpt.editor.maxTokens",
  temperature: "tinygpt.editor.temperature",
  draft: "tinygpt.editor.draft",
};
// What the mirror copies from the textarea so that its text wraps exactly like the textarea's.
const MIRRORED_STYLES = [
  "boxSizing", "width", "paddingTop", "paddingRight", "paddingBottom", "paddingLeft",
  "borderTopWidth", "borderRightWidth", "borderBottomWidth", "borderLeftWidth", "borderStyle",
  "fontFamily", "fontSize", "fontStyle", "fontVariant", "fontWeight", "fontStretch", "fontKerning",
  "fontFeatureSettings", "lineHeight", "letterSpacing", "wordSpacing", "textIndent", "textTransform",
  "tabSize", "direction",
];

const ui = {
  editor: document.getElementById("editor"),
  sheet: document.getElementById("sheet"),
  list: document.getElementById("suggestions"),
  status: document.getElementById("status"),
  speed: document.getElementById("speed"),
  modelName: document.getElementById("model-name"),
  maxTokens: document.getElementById("max-tokens"),
  temperature: document.getElementById("temperature"),
  apiKey: document.getElementById("api-key"),
};

let modelId = null; // the first model GET /v1/models lists, fetched once (again after the API key changes)
let session = null; // the suggestions on show, and their request while it streams


// ------------------------------------------------------------------------------------------- storage, settings
function remembered(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null; // storage can be disabled; the page works without it
  }
}

function remember(key, value) {
  try {
    if (value) window.localStorage.setItem(key, value);
    else window.localStorage.removeItem(key);
  } catch {
    // as above: nothing is lost but the convenience
  }
}

function restoreSettings() {
  ui.apiKey.value = remembered(STORED.apiKey) ?? "";
  ui.maxTokens.value = remembered(STORED.maxTokens) ?? ui.maxTokens.value;
  ui.temperature.value = remembered(STORED.temperature) ?? ui.temperature.value;
  ui.editor.value = remembered(STORED.draft) ?? "";
}

class SettingError extends Error {}

// The request's sampling settings, checked here so that a typo gets a message naming the field.
function readSettings() {
  const maxTokens = Number(ui.maxTokens.value);
  if (ui.maxTokens.value.trim() === "" || !Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new SettingError("Length must be a whole number of tokens, at least 1.");
  }
  const temperature = Number(ui.temperature.value);
  if (ui.temperature.value.trim() === "" || !Number.isFinite(temperature) || temperature < 0 || temperature > 2) {
    throw new SettingError("Temperature must be a number from 0 to 2.");
  }
  return { max_tokens: maxTokens, temperature };
}


// ----------------------------------------------------------------------------------------------- status line
function setStatus(text, kind = "info") {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

function showSpeed(usage, startedAt) {
  const seconds = (performance.now() - startedAt) / 1000;
  const tokens = usage.completion_tokens;
  if (!Number.isFinite(tokens) || seconds <= 0) return;
  ui.speed.textContent = `${(tokens / seconds).toFixed(1)} tok/s`;
  ui.speed.title = `The last request generated ${tokens} tokens in ${seconds.toFixed(2)} s`;
}


// ------------------------------------------------------------------------------------------------ the server
function authHeaders() {
  const key = ui.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// One line from a failed response: the OpenAI error object's message when there is one.
async function describeFailure(response) {
  let message = response.statusText || "no message";
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: the status text has to do
  }
  const retry = response.headers.get("Retry-After");
  let advice = retry ? ` Try again in ${retry} s.` : "";
  if (response.status === 401) advice = " Fill in the API key field above.";
  return `The server answered ${response.status}: ${message}${advice}`;
}

async function ensureModelId(signal) {
  if (modelId !== null) return modelId;
  const response = await fetch("/v1/models", { headers: authHeaders(), signal });
  if (!response.ok) throw new Error(await describeFailure(response));
  const listing = await response.json();
  if (!listing.data || listing.data.length === 0 || !listing.data[0].id) {
    throw new Error("The server lists no model at /v1/models.");
  }
  modelId = listing.data[0].id;
  ui.modelName.textContent = modelId;
  return modelId;
}

async function greetServer() {
  modelId = null;
  try {
    await ensureModelId();
    setStatus("Ready. Write something, then press Tab.");
  } catch (error) {
    ui.modelName.textContent = "not connected";
    setStatus(explain(error), "error");
  }
}

// fetch and the body's reader reject with a bare TypeError ("Failed to fetch") when the connection fails.
function explain(error) {
  return error instanceof TypeError ? `No connection to the server (${error.message}).` : error.message;
}

// The data of each server-sent event of a response, as it arrives; the body's chunks may split the text
// anywhere (inside an event, a line ending, or a UTF-8 character).
async function* serverSentEvents(response) {
  const eventEnd = /(?:\r\n|\r(?!\n)|\n){2}/;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end;
      while ((end = eventEnd.exec(buffer)) !== null) {
        const data = eventData(buffer.slice(0, end.index));
        buffer = buffer.slice(end.index + end[0].length);
        if (data !== null) yield data;
      }
      if (done) return;
    }
  } finally {
    reader.cancel().catch(() => {}); // after [DONE] or an abort: let the connection go
  }
}

// The joined "data:" lines of one event; null for events without data (comments such as keep-alives).
function eventData(block) {
  const lines = block.split(/\r\n|\r|\n/).filter((line) => line.startsWith("data:"));
  if (lines.length === 0) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}


// -------------------------------------------------------------------------------------------- the suggestions
async function requestSuggestions() {
  let settings;
  try {
    settings = readSettings();
  } catch (error) {
    if (!(error instanceof SettingError)) throw error;
    setStatus(error.message, "error");
    return;
  }
  dismiss();
  const current = openSession();
  setStatus("Writing three continuations…", "busy");
  try {
    await streamInto(current, settings);
  } catch (error) {
    if (current !== session) return; // dismissed meanwhile: its abort is no news
    setStatus(explain(error), "error");
    if (current.texts.every((text) => text === "")) dismiss();
    else finishSession(current);
  }
}

async function streamInto(current, settings) {
  const signal = current.controller.signal;
  const model = await ensureModelId(signal);
  const response = await fetch("/v1/completions", {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({
      model,
      prompt: current.prompt,
      ...settings,
      n: SUGGESTION_COUNT,
      stream: true,
      stream_options: { include_usage: true },
    }),
    signal,
  });
  if (!response.ok) throw new Error(await describeFailure(response));
  for await (const data of serverSentEvents(response)) {
    if (current !== session) return;
    if (data === "[DONE]") {
      finishSession(current);
      setStatus("Pick one with ↑ ↓ and Enter, or keep writing.");
      return;
    }
    applyChunk(current, parseChunk(data));
  }
  throw new Error("The server ended the stream before its [DONE] event.");
}

function parseChunk(data) {
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch {
    throw new Error(`The server sent an event that is not JSON: ${data.slice(0, 80)}`);
  }
  if (chunk && chunk.error) throw new Error(`The server stopped: ${chunk.error.message || "no message"}`);
  return chunk;
}

function applyChunk(current, chunk) {
  for (const choice of chunk.choices || []) {
    const index = choice.index;
    if (!Number.isInteger(index) || index < 0 || index >= SUGGESTION_COUNT) continue;
    current.texts[index] += choice.text || "";
    if (choice.finish_reason) current.finished[index] = true;
    renderOption(current, index);
  }
  if (chunk.usage) showSpeed(chunk.usage, current.startedAt);
  placeList(current);
}

// A new set of suggestions for the text before the cursor; a selection would be replaced by the one chosen.
function openSession() {
  const { selectionStart, selectionEnd, value } = ui.editor;
  const current = {
    controller: new AbortController(),
    start: selectionStart,
    end: selectionEnd,
    prompt: value.slice(0, selectionStart),
    texts: Array(SUGGESTION_COUNT).fill(""),
    finished: Array(SUGGESTION_COUNT).fill(false),
    selected: -1, // nothing yet: Enter still starts a new line until an arrow key picks a suggestion
    above: false, // placed above the caret, for want of room below
    caret: null, // where the caret is, in the sheet's coordinates (see placeList)
    startedAt: performance.now(),
  };
  session = current;
  ui.list.replaceChildren(...current.texts.map((_, index) => optionElement(index)));
  ui.list.hidden = false;
  ui.list.setAttribute("aria-busy", "true");
  ui.editor.setAttribute("aria-expanded", "true");
  placeList(current);
  return current;
}

function optionElement(index) {
  const option = document.createElement("li");
  option.id = `suggestion-${index}`;
  option.className = "suggestion pending";
  option.setAttribute("role", "option");
  option.setAttribute("aria-selected", "false");
  option.dataset.index = String(index);
  const text = document.createElement("span");
  text.className = "text";
  option.append(text);
  return option;
}

function renderOption(current, index) {
  const option = ui.list.children[index];
  option.querySelector(".text").textContent = current.texts[index];
  option.classList.toggle("pending", !current.finished[index]);
}

function finishSession(current) {
  current.finished.fill(true);
  ui.list.setAttribute("aria-busy", "false");
  current.texts.forEach((_, index) => renderOption(current, index));
}

function dismiss() {
  if (session === null) return;
  session.controller.abort();
  session = null;
  ui.list.hidden = true;
  ui.list.replaceChildren();
  ui.sheet.style.removeProperty("--overhang");
  ui.editor.setAttribute("aria-expanded", "false");
  ui.editor.removeAttribute("aria-activedescendant");
  if (ui.status.dataset.kind === "busy") setStatus("");
}

function select(index) {
  session.selected = index;
  for (const option of ui.list.children) {
    const chosen = Number(option.dataset.index) === index;
    option.setAttribute("aria-selected", String(chosen));
  }
  ui.editor.setAttribute("aria-activedescendant", `suggestion-${index}`);
  ui.list.children[index].scrollIntoView({ block: "nearest" });
}

function moveSelection(step) {
  const { selected } = session;
  if (selected < 0) select(step > 0 ? 0 : SUGGESTION_COUNT - 1);
  else select((selected + step + SUGGESTION_COUNT) % SUGGESTION_COUNT);
}

// Insert a suggestion (as much of it as has arrived) where the cursor was when Tab was pressed.
function accept(index) {
  const current = session;
  const text = current.texts[index];
  dismiss();
  ui.editor.focus();
  ui.editor.setSelectionRange(current.start, current.end);
  // execCommand keeps the browser's undo history (Ctrl+Z takes the insertion back); setRangeText does not.
  const inserted = text !== "" && document.execCommand("insertText", false, text);
  if (text !== "" && !inserted) {
    ui.editor.setRangeText(text, current.start, current.end, "end");
    documentChanged();
  }
  setStatus(text === "" ? "That suggestion was empty." : "");
}


// ------------------------------------------------------------------------------------------------- placement
// The caret's position in the sheet's coordinates: a hidden copy of the textarea (the mirror) wraps the same
// text the same way, and a marker where the cursor is shows where the caret is.
function caretPosition(index) {
  const { editor, sheet } = ui;
  const computed = window.getComputedStyle(editor);
  const mirror = document.createElement("div");
  for (const name of MIRRORED_STYLES) mirror.style[name] = computed[name];
  Object.assign(mirror.style, {
    position: "absolute", visibility: "hidden", top: "0", left: "0", height: "auto",
    whiteSpace: "pre-wrap", overflowWrap: "break-word", wordBreak: computed.wordBreak,
  });
  mirror.textContent = editor.value.slice(0, index);
  const marker = document.createElement("span");
  // The rest of the text, not one character: the word under the cursor wraps as a whole.
  marker.textContent = editor.value.slice(index) || ".";
  mirror.append(marker);
  sheet.append(mirror);
  const line = marker.getClientRects()[0];
  const origin = mirror.getBoundingClientRect();
  mirror.remove();
  return {
    top: editor.offsetTop + line.top - origin.top - editor.scrollTop,
    left: editor.offsetLeft + line.left - origin.left - editor.scrollLeft,
    height: line.height,
  };
}

// Below the caret's line, always inside the sheet's width. When the window has no room below, the page scrolls
// to show the list, as long as the caret's line stays in view; failing that, the list goes above the caret.
function placeList(current) {
  const { list, sheet } = ui;
  // Any edit or caret move ends the session, so its caret moves only when the window's width changes.
  current.caret = current.caret || caretPosition(current.start);
  const { caret } = current;
  const width = Math.min(LIST_MAX_WIDTH_PX, sheet.clientWidth);
  list.style.width = `${width}px`;
  list.style.left = `${Math.max(0, Math.min(caret.left, sheet.clientWidth - width))}px`;
  const height = list.offsetHeight;
  const caretTopOnScreen = sheet.getBoundingClientRect().top + caret.top;
  const roomBelow = window.innerHeight - (caretTopOnScreen + caret.height + GAP_PX);
  const fitsWithCaretLine = caret.height + GAP_PX + height <= window.innerHeight;
  // Once above, stay there: the list grows as text streams in, and it should not jump back and forth.
  current.above = current.above || (height > roomBelow && !fitsWithCaretLine && caretTopOnScreen > roomBelow);
  const top = current.above ? caret.top - GAP_PX - height : caret.top + caret.height + GAP_PX;
  list.style.top = `${top}px`;
  // Room at the end of the page for a list hanging below the sheet, so that the page can scroll to show it.
  const overhang = Math.max(0, top + height - sheet.offsetHeight);
  sheet.style.setProperty("--overhang", `${Math.ceil(overhang)}px`);
  revealList();
}

// Scroll the page, if need be, so that the whole list is in view with a little room around it; whole pixels
// (scrollIntoView can leave a fraction of one outside).
function revealList() {
  const box = ui.list.getBoundingClientRect();
  const below = box.bottom + GAP_PX - window.innerHeight;
  const above = GAP_PX - box.top;
  if (below > 0) window.scrollBy(0, Math.ceil(Math.min(below, -above)));
  else if (above > 0) window.scrollBy(0, -Math.ceil(Math.min(above, -below)));
}


// ---------------------------------------------------------------------------------------------------- events
let draftTimer = 0;

// The textarea grows with its text, so that the page scrolls like a document and the caret stays in view.
function fitEditorHeight() {
  const scroll = window.scrollY;
  ui.editor.style.height = "auto";
  ui.editor.style.height = `${ui.editor.scrollHeight}px`;
  window.scrollTo(window.scrollX, scroll);
}

function documentChanged() {
  dismiss();
  fitEditorHeight();
  window.clearTimeout(draftTimer);
  draftTimer = window.setTimeout(() => remember(STORED.draft, ui.editor.value), 400);
}

const CARET_KEYS = new Set(["ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"]);

function onEditorKey(event) {
  if (event.isComposing) return;
  const plain = !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey;
  if (event.key === "Tab" && plain) {
    event.preventDefault();
    requestSuggestions();
    return;
  }
  if (session === null) return;
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    moveSelection(event.key === "ArrowDown" ? 1 : -1);
  } else if (event.key === "Enter" && plain && session.selected >= 0) {
    event.preventDefault();
    accept(session.selected);
  } else if (event.key === "Escape") {
    event.preventDefault();
    dismiss();
    setStatus("Dismissed. Shift+Tab leaves the editor.");
  } else if (CARET_KEYS.has(event.key)) {
    dismiss(); // the cursor moves away from where the suggestions would go
  }
}

function optionUnder(event) {
  const option = event.target.closest(".suggestion");
  return option && session ? Number(option.dataset.index) : -1;
}

function setUp() {
  restoreSettings();
  fitEditorHeight();
  const { editor, list } = ui;
  editor.addEventListener("keydown", onEditorKey);
  editor.addEventListener("input", documentChanged);
  editor.addEventListener("mousedown", dismiss);
  editor.addEventListener("blur", dismiss);
  // The list must not take the focus (or the caret's place) from the editor when clicked.
  list.addEventListener("mousedown", (event) => event.preventDefault());
  list.addEventListener("click", (event) => {
    const index = optionUnder(event);
    if (index >= 0) accept(index);
  });
  list.addEventListener("mousemove", (event) => {
    const index = optionUnder(event);
    if (index >= 0 && index !== session.selected) select(index);
  });
  window.addEventListener("resize", () => {
    fitEditorHeight();
    if (session) {
      session.caret = null;
      placeList(session);
    }
  });
  ui.apiKey.addEventListener("change", () => {
    remember(STORED.apiKey, ui.apiKey.value.trim());
    greetServer();
  });
  ui.maxTokens.addEventListener("change", () => remember(STORED.maxTokens, ui.maxTokens.value));
  ui.temperature.addEventListener("change", () => remember(STORED.temperature, ui.temperature.value));
  document.getElementById("settings").addEventListener("submit", (event) => event.preventDefault());
  greetServer();
}

setUp();
