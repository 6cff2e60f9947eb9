// The Explain panel: POST /v1/models/{name}/explain for the image on the page.
// Two requests per run, sent together: the JSON answer (target, layer, top-k, range) and
// the heatmap alone as a PNG. The heatmap is drawn over the image the model saw (the
// page's /preprocessed rendering) on a canvas, with the slider as the canvas's globalAlpha:
// moving it redraws locally and never asks the server again. The blend is the server's
// overlay, (1 - alpha) image + alpha heatmap.

const $ = (id) => document.getElementById(id);
const CAM_METHODS = new Set(["gradcam", "gradcam_plus"]);
const CONV = /conv/i;

const panel = {
  api: null, // the page's fetch with the API key and problem+json errors
  topKItems: null, // the page's top-k list items
  model: null,
  image: null, // the image on the page
  seen: null, // a promise of the /preprocessed PNG of that image
  drawn: null, // { seen, heatmap }: the bitmaps on the canvas, redrawn when the slider moves
  run: 0, // a newer run or image drops an older run's answer
};

const path = (suffix) => `/v1/models/${encodeURIComponent(panel.model.name)}${suffix}`;

// ---------------------------------------------------------------- the form

function showMethodInputs() {
  const method = $("explain-method").value;
  for (const element of $("explain-form").querySelectorAll("[data-methods]")) {
    element.hidden = !element.dataset.methods.split(" ").includes(method);
  }
  showPasses();
}

// The occlusion's forward passes as the server counts them, against its limit.
function occlusionPasses() {
  const { height, width } = panel.model.input;
  const window = Number($("explain-window").value) || Math.max(1, Math.round(Math.min(height, width) / 7));
  const stride = Number($("explain-stride").value) || Math.max(1, Math.floor(window / 2));
  const along = (side) => Math.ceil((side - window) / stride) + 1;
  return { window, stride, passes: along(height) * along(width) + 1 };
}

function showPasses() {
  if (!panel.model) return;
  const { window, stride, passes } = occlusionPasses();
  const limit = Number($("explain-passes").dataset.limit);
  $("explain-stride").max = String(window);
  $("explain-passes").textContent =
    `window ${window} · stride ${stride}: ${passes.toLocaleString("en")} forward passes ` +
    `(limit ${limit.toLocaleString("en")}; window 1–${$("explain-window").max}, stride ≤ window)`;
  $("explain-passes").classList.toggle("over", passes > limit);
}

function query() {
  const method = $("explain-method").value;
  const topK = Math.min(Number($("top-k-count").value) || 5, panel.model.labels.length); // the page's "top k"
  const params = new URLSearchParams({ method, top_k: String(Math.max(1, topK)) });
  const chosen = {
    target: $("explain-target").value,
    layer: CAM_METHODS.has(method) ? $("explain-layer").value : "",
    steps: method === "integrated_gradients" ? $("explain-steps").value : "",
    baseline: ["integrated_gradients", "occlusion"].includes(method) ? $("explain-baseline").value : "",
    window: method === "occlusion" ? $("explain-window").value : "",
    stride: method === "occlusion" ? $("explain-stride").value : "",
  };
  // Empty means the server's default: the parameter is left out.
  for (const [name, value] of Object.entries(chosen)) if (value) params.set(name, value);
  return params;
}

// ---------------------------------------------------------------- the answer

function draw() {
  const canvas = $("explain-canvas");
  const ctx = canvas.getContext("2d");
  const alpha = Number($("explain-alpha").value);
  $("explain-alpha-value").textContent = alpha.toFixed(2);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!panel.drawn) return;
  const { seen, heatmap } = panel.drawn;
  ctx.imageSmoothingEnabled = false; // pixels stay square, like the server's enlargement
  ctx.globalAlpha = 1;
  ctx.drawImage(seen, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = alpha;
  ctx.drawImage(heatmap, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 1;
}

function echo(answer) {
  const { method, target, layer, prediction, min, max } = answer;
  $("explain-echo-method").textContent = $("explain-method").selectedOptions[0].text;
  $("explain-echo-method").dataset.value = method;
  const how = $("explain-target").value ? "chosen" : "top 1";
  $("explain-echo-target").textContent = `${target.label} (class ${target.index}, ${how})`;
  $("explain-echo-target").dataset.value = target.label;
  $("explain-echo-layer").textContent = layer ?? "– (not a CAM method)";
  $("explain-echo-layer").dataset.value = layer ?? "";
  $("explain-echo-range").textContent = `${min.toPrecision(3)} … ${max.toPrecision(3)}`;
  $("explain-echo").hidden = false;
  $("explain-top-k").replaceChildren(...panel.topKItems(prediction.top_k));
  if (layer && !$("explain-layer").value) $("explain-layer").options[0].text = `server default (${layer})`;
}

function clearAnswer() {
  panel.drawn = null;
  draw();
  $("explain-echo").hidden = true;
  $("explain-top-k").replaceChildren();
  $("explain-error").hidden = true;
  $("explain-status").textContent = "";
}

function showProblem(err) {
  $("explain-error").textContent = err.message || String(err);
  $("explain-error").dataset.code = err.code || "client_error";
  $("explain-error").hidden = false;
}

async function explain() {
  if (!panel.image || !panel.model) return;
  const run = ++panel.run;
  const { image } = panel;
  clearAnswer();
  $("explain-status").textContent = "explaining…";
  $("explain-card").dataset.state = "pending";
  const params = query();
  const heatmap = new URLSearchParams({ ...Object.fromEntries(params), format: "png", view: "heatmap" });
  try {
    const [answer, heatmapBlob, seenBlob] = await Promise.all([
      panel.api(path(`/explain?${params}`), { method: "POST", body: image }).then((r) => r.json()),
      panel.api(path(`/explain?${heatmap}`), { method: "POST", body: image }).then((r) => r.blob()),
      panel.seen,
    ]);
    const bitmaps = await Promise.all([createImageBitmap(seenBlob), createImageBitmap(heatmapBlob)]);
    if (run !== panel.run) return;
    const canvas = $("explain-canvas");
    [canvas.width, canvas.height] = [bitmaps[1].width, bitmaps[1].height];
    panel.drawn = { seen: bitmaps[0], heatmap: bitmaps[1] };
    draw();
    echo(answer);
    $("explain-status").textContent = "";
    $("explain-card").dataset.state = "done";
  } catch (err) {
    if (run !== panel.run) return;
    $("explain-status").textContent = "";
    $("explain-card").dataset.state = "error";
    showProblem(err);
  }
}

// ---------------------------------------------------------------- what the page calls

// A model was chosen and its layers listed: fill the pickers, forget the old answer.
export function explainModel(model, layers) {
  panel.model = model;
  const targets = model.labels.map((label) => new Option(label, label));
  $("explain-target").replaceChildren(new Option("top 1", ""), ...targets);
  const convs = layers.filter((layer) => CONV.test(layer.type));
  $("explain-layer").replaceChildren(new Option("server default", ""), ...convs.map((l) => new Option(l.name, l.name)));
  const side = Math.min(model.input.height, model.input.width);
  $("explain-window").max = String(side);
  $("explain-window").placeholder = String(Math.max(1, Math.round(side / 7)));
  $("explain-stride").placeholder = "window / 2";
  panel.image = null;
  panel.run++;
  $("explain-run").disabled = true;
  clearAnswer();
  showMethodInputs();
}

// A new image is on the page; `seen` is a promise of the PNG the model saw of it.
export function explainImage(image, seen) {
  panel.image = image;
  panel.seen = seen;
  seen.catch(() => {}); // the page reports that error; an Explain run reports it again
  panel.run++;
  $("explain-run").disabled = false;
  clearAnswer();
}

export function setUpExplain({ api, topKItems }) {
  panel.api = api;
  panel.topKItems = topKItems;
  $("explain-form").addEventListener("submit", (event) => {
    event.preventDefault();
    explain();
  });
  $("explain-method").addEventListener("change", showMethodInputs);
  $("explain-window").addEventListener("input", showPasses);
  $("explain-stride").addEventListener("input", showPasses);
  $("explain-alpha").addEventListener("input", draw);
  showMethodInputs();
}
