// The cnn-serve debugging page. It uses the public HTTP API only (plus the page's own
// /preprocessed rendering), so what it shows is what any client would get.
// Images come back as blobs fetched with the API key and shown through object URLs:
// an <img src> alone could not send the Authorization header.

import { explainImage, explainModel, setUpExplain } from "./explain.js";
import { framedDrawing, setUpPad } from "./pad.js";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "cnn-serve.api-key";
const CONV = /conv/i; // the convolution family: Conv1d/2d/3d, ConvTranspose2d, ...
const hasKernels = (layer) => layer.has_kernels ?? /^conv2d$/i.test(layer.type);
const MIN_TILE = 56; // upscale small maps (7x7) until a channel is at least this many pixels

const state = {
  models: [], // /v1/models
  model: null, // the chosen model's metadata
  layers: [], // /v1/models/{name}/layers, [] when the server has no feature-map endpoints
  shown: new Set(), // layers whose feature maps are drawn
  image: null, // the last image sent, re-sent when the model or a setting changes
  run: 0, // answers from an older run are dropped: a slow reply never overwrites a newer one
  urls: new Map(), // <img> -> its object URL, revoked when replaced
};

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------------------------------------------------------------- HTTP

function authHeaders(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, { method = "GET", body = null } = {}) {
  const headers = authHeaders(body ? { "Content-Type": body.type || "application/octet-stream" } : {});
  let response;
  try {
    // Bytes rather than the Blob itself: the request then carries its body in memory,
    // where the browser's developer tools (and test drivers) can see it.
    response = await fetch(path, { method, body: body && (await body.arrayBuffer()), headers });
  } catch (err) {
    throw new ApiError(`Cannot reach the server: ${err.message}`, 0, "network");
  }
  if (!response.ok) throw await problem(response);
  return response;
}

// RFC 9457 problem+json -> one readable line; anything else -> the status line.
async function problem(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let code = "http_error";
  try {
    const body = await response.json();
    if (body && body.detail) {
      message = `${body.title || message}: ${body.detail}`;
      code = body.code || code;
    }
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) message += " (enter the API key at the top right)";
  return new ApiError(message, response.status, code);
}

const modelPath = (suffix) => `/v1/models/${encodeURIComponent(state.model.name)}${suffix}`;

// ---------------------------------------------------------------- errors

function clearErrors() {
  $("errors").replaceChildren();
  $("errors").hidden = true;
}

function showError(err) {
  const text = err instanceof ApiError ? err.message : `Unexpected error: ${err.message || err}`;
  const list = $("errors");
  if ([...list.children].some((li) => li.textContent === text)) return; // one line per cause
  const item = document.createElement("li");
  item.textContent = text;
  item.dataset.code = err.code || "client_error";
  list.append(item);
  list.hidden = false;
}

// Run `work` for the current run; report its error only if no newer run replaced it.
async function guarded(run, work) {
  try {
    await work();
  } catch (err) {
    if (run === state.run) showError(err);
    throw err;
  }
}

// ---------------------------------------------------------------- images

function showBlob(img, blob) {
  const old = state.urls.get(img);
  if (old) URL.revokeObjectURL(old);
  const url = URL.createObjectURL(blob);
  state.urls.set(img, url);
  img.src = url;
}

function blank(img) {
  const old = state.urls.get(img);
  if (old) URL.revokeObjectURL(old);
  state.urls.delete(img);
  img.removeAttribute("src");
}

// ---------------------------------------------------------------- models and layers

async function loadModels() {
  clearErrors();
  try {
    state.models = (await (await api("/v1/models")).json()).models;
  } catch (err) {
    showError(err);
    return;
  }
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  $("model-picker").hidden = state.models.length < 2;
  if (state.models.length) await chooseModel(state.models[0].name);
}

async function chooseModel(name) {
  state.model = state.models.find((m) => m.name === name);
  const { input, labels, architecture, device, dtype } = state.model;
  $("model-info").textContent =
    `${architecture} · input ${input.channels}×${input.height}×${input.width} · ` +
    `${labels.length} classes · ${device} ${dtype}`;
  $("draw").hidden = input.channels !== 1; // the drawing pad makes grey digits
  $("top-k-count").max = String(labels.length);
  $("preprocessed-caption").textContent = `what the model saw (${input.width}×${input.height})`;
  await loadLayers();
  if (state.image) await analyse(state.image);
}

async function loadLayers() {
  state.layers = [];
  $("layers-note").textContent = "";
  try {
    state.layers = (await (await api(modelPath("/layers"))).json()).layers;
  } catch (err) {
    if (err.status === 404 && err.code === "not_found") {
      $("layers-note").textContent = "This server offers no feature-map endpoints.";
    } else {
      showError(err);
    }
  }
  state.shown = new Set(state.layers.filter((l) => CONV.test(l.type)).map((l) => l.name));
  renderLayerTable();
  renderKernelPicker();
  renderMapSlots();
  explainModel(state.model, state.layers);
}

const fmtShape = (shape) => (shape ? shape.join("×") : "");

function renderLayerTable() {
  const rows = state.layers.map((layer) => {
    const row = document.createElement("tr");
    row.dataset.layer = layer.name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.shown.has(layer.name);
    box.setAttribute("aria-label", `show the feature maps of ${layer.name}`);
    box.addEventListener("change", () => toggleLayer(layer.name, box.checked));
    const cells = [layer.name, layer.type, fmtShape(layer.output_shape), layer.parameters ?? ""];
    row.append(cell(box), ...cells.map((text) => cell(String(text))));
    if (CONV.test(layer.type)) row.classList.add("conv");
    return row;
  });
  $("layers").querySelector("tbody").replaceChildren(...rows);
  $("layers").hidden = rows.length === 0;
}

function cell(content) {
  const td = document.createElement("td");
  td.append(content);
  return td;
}

function toggleLayer(name, on) {
  if (on) state.shown.add(name);
  else state.shown.delete(name);
  renderMapSlots();
  if (on && state.image) {
    const run = state.run;
    const layer = state.layers.find((l) => l.name === name);
    featureMap(layer, state.image, run).catch(() => {});
    layerStats([layer], state.image, run).catch(() => {});
  }
}

// ---------------------------------------------------------------- feature maps and kernels

function renderMapSlots() {
  const figures = state.layers
    .filter((layer) => state.shown.has(layer.name))
    .map((layer) => {
      const existing = $("maps").querySelector(`figure[data-layer="${CSS.escape(layer.name)}"]`);
      if (existing) return existing;
      const figure = document.createElement("figure");
      figure.dataset.layer = layer.name;
      const img = document.createElement("img");
      img.dataset.layer = layer.name;
      img.className = "pixels";
      img.alt = `feature maps of ${layer.name}`;
      const caption = document.createElement("figcaption");
      caption.textContent = `${layer.name} · ${layer.type} · ${fmtShape(layer.output_shape)}`;
      const stats = document.createElement("p");
      stats.className = "stats muted";
      figure.append(caption, img, stats);
      return figure;
    });
  $("maps").replaceChildren(...figures);
}

function mapScale(layer) {
  const height = layer.output_shape ? layer.output_shape[layer.output_shape.length - 2] : MIN_TILE;
  return Math.max(1, Math.min(8, Math.round(MIN_TILE / height)));
}

async function featureMap(layer, image, run) {
  const params = new URLSearchParams({ layers: layer.name, format: "png", scale: mapScale(layer) });
  const channels = $("channels").value.trim();
  if (channels) params.set("channels", channels);
  await guarded(run, async () => {
    const blob = await (await api(modelPath(`/feature-maps?${params}`), { method: "POST", body: image })).blob();
    const img = $("maps").querySelector(`img[data-layer="${CSS.escape(layer.name)}"]`);
    if (run === state.run && img) showBlob(img, blob);
  });
}

// One JSON request for the layers' per-channel statistics, summed up under each grid.
async function layerStats(layers, image, run) {
  if (!layers.length) return;
  const params = new URLSearchParams({ layers: layers.map((l) => l.name).join(","), format: "json" });
  await guarded(run, async () => {
    const body = await (await api(modelPath(`/feature-maps?${params}`), { method: "POST", body: image })).json();
    if (run !== state.run) return;
    for (const { name, stats } of body.layers) {
      const line = $("maps").querySelector(`figure[data-layer="${CSS.escape(name)}"] .stats`);
      if (line) line.textContent = summary(stats);
    }
  });
}

function summary({ mean, max, zeros }) {
  const average = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  const dead = zeros.filter((z) => z === 1).length;
  return (
    `mean ${average(mean).toFixed(3)} · max ${Math.max(...max).toFixed(3)} · ` +
    `zeros ${(average(zeros) * 100).toFixed(1)} % · all-zero channels ${dead}/${zeros.length}`
  );
}

function renderKernelPicker() {
  const convs = state.layers.filter(hasKernels);
  $("kernel-layer").replaceChildren(...convs.map((l) => new Option(l.name, l.name)));
  $("kernels-card").hidden = convs.length === 0;
  blank($("kernels"));
  if (convs.length) showKernels(convs[0].name);
}

async function showKernels(name) {
  const layer = state.layers.find((l) => l.name === name);
  $("kernels-caption").textContent = "";
  try {
    const path = modelPath(`/layers/${encodeURIComponent(name)}/kernels?format=png`);
    showBlob($("kernels"), await (await api(path)).blob());
    const weight = layer.kernel_size ? ` · kernel ${fmtShape(layer.kernel_size)}` : "";
    $("kernels-caption").textContent = `${name}: one tile per (output, input) channel${weight}`;
  } catch (err) {
    showError(err);
  }
}

// ---------------------------------------------------------------- prediction

// One <li> per entry of an answer's top_k: label, bar, percentage.
function topKItems(topK) {
  return topK.map((entry) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = entry.label;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = entry.probability;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(entry.probability * 100).toFixed(1)} %`;
    item.append(name, bar, value);
    return item;
  });
}

function renderPrediction(prediction) {
  const label = $("prediction");
  label.textContent = prediction.label;
  label.dataset.label = prediction.label;
  label.dataset.state = "done";
  $("top-k").replaceChildren(...topKItems(prediction.top_k));
}

async function classify(image, run) {
  const topK = Math.max(1, Number($("top-k-count").value) || 5);
  await guarded(run, async () => {
    try {
      const answer = await (await api(modelPath(`/classify?top_k=${topK}`), { method: "POST", body: image })).json();
      if (run === state.run) renderPrediction(answer.predictions[0]);
    } catch (err) {
      if (run === state.run) $("prediction").dataset.state = "error";
      throw err;
    }
  });
}

async function preprocessed(seen, run) {
  await guarded(run, async () => {
    const blob = await seen;
    if (run === state.run) showBlob($("preprocessed"), blob);
  });
}

// One image through everything at once; the requests share the server's batches.
async function analyse(image) {
  if (!state.model) return;
  const run = ++state.run;
  state.image = image;
  clearErrors();
  showBlob($("original"), image);
  blank($("preprocessed"));
  $("maps").querySelectorAll("img").forEach(blank);
  $("maps").querySelectorAll(".stats").forEach((line) => line.replaceChildren());
  $("prediction").textContent = "…";
  $("prediction").dataset.state = "pending";
  $("top-k").replaceChildren();
  // What the model saw: shown here, and drawn under the Explain panel's heatmap.
  const seen = api(modelPath("/preprocessed"), { method: "POST", body: image }).then((r) => r.blob());
  explainImage(image, seen);
  const shown = state.layers.filter((l) => state.shown.has(l.name));
  const maps = shown.map((layer) => featureMap(layer, image, run));
  await Promise.allSettled([classify(image, run), preprocessed(seen, run), layerStats(shown, image, run), ...maps]);
}

// ---------------------------------------------------------------- drawing pad

async function classifyDrawing() {
  const framed = framedDrawing();
  if (!framed) {
    clearErrors();
    showError(new ApiError("The drawing pad is empty: draw a digit first.", 0, "empty_drawing"));
    return;
  }
  await analyse(await framed);
}

// ---------------------------------------------------------------- wiring

function setUpInputs() {
  $("file").addEventListener("change", () => {
    if ($("file").files.length) analyse($("file").files[0]);
    $("file").value = ""; // picking the same file again still fires "change"
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) analyse(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) analyse(file);
  });
}

function setUpSettings() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => event.preventDefault());
  key.addEventListener("change", () => {
    if (key.value) sessionStorage.setItem(KEY_STORAGE, key.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadModels();
  });
  $("model").addEventListener("change", () => chooseModel($("model").value));
  $("kernel-layer").addEventListener("change", () => showKernels($("kernel-layer").value));
  const rerun = () => state.image && analyse(state.image);
  $("top-k-count").addEventListener("change", rerun);
  $("channels").addEventListener("change", rerun);
}

setUpInputs();
setUpPad($("canvas"), $("clear-drawing"), () => $("auto-classify").checked && classifyDrawing());
$("classify-drawing").addEventListener("click", classifyDrawing);
setUpSettings();
setUpExplain({ api, topKItems });
loadModels();
