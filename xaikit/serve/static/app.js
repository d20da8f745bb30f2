// xaikit serve: the page. Plain JavaScript, no build step, no network beyond this server.
// The whole view lives in the URL hash (a permalink); every computation is a job on the
// server, polled until done; a new request for the same panel cancels the previous job.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token");
const TAB = Math.random().toString(36).slice(2, 10); // this tab's job views
const state = {
  model: "", item: "", upload: "", methods: [], target: "predicted", cls: "", layer: "auto",
  reshape: "auto", score: "logit", cmap: "jet", opacity: "0.5", tab: "maps", flayer: "",
  channel: "", steps: "32", sort: "index", only: "",
};
let catalogue = null;
let card = null;
let galleryItems = [];
const current = {}; // view -> job id

// -- talking to the server -------------------------------------------------------------

function withToken(url) {
  if (!TOKEN) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (TOKEN) headers["X-Xaikit-Token"] = TOKEN;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function post(path, payload) {
  return api(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
  });
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// Start a job for `view` and poll it; resolves with its result, or null when superseded.
async function runJob(view, path, payload) {
  const previous = current[view];
  // "wait": the server holds the answer until the job is done (0.5 s at most), so a quick
  // view takes one request; a longer one is then long-polled with its progress shown.
  const started = await post(path, Object.assign({ view: TAB + ":" + view, wait: 0.5 }, payload));
  current[view] = started.job;
  if (previous && previous !== started.job) api(`/api/jobs/${previous}/cancel`, { method: "POST" }).catch(() => {});
  let job = started;
  showProgress(job);
  while (job.status === "queued" || job.status === "running") {
    await sleep(30);
    if (current[view] !== started.job) return null;
    job = await api(`/api/jobs/${started.job}?wait=0.5`); // a long poll: held until done or 0.5 s
    showProgress(job);
  }
  if (current[view] !== started.job) return null;
  $("progress").hidden = true;
  if (job.status === "error") throw new Error(job.error);
  if (job.status === "cancelled") { setStatus("cancelled"); return null; }
  return job.result;
}

function showProgress(job) {
  $("progress").hidden = job.status === "done";
  $("progress-bar").value = job.progress || 0;
  $("progress-text").textContent = `${job.kind}: ${job.message || job.status}`;
  $("cancel").dataset.job = job.job;
}

function setStatus(text, bad = false) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "";
}

// -- the permalink ---------------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const key of Object.keys(state)) {
    if (!params.has(key)) continue;
    state[key] = key === "methods" ? params.get(key).split(",").filter(Boolean) : params.get(key);
  }
}

function writeHash() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    const text = Array.isArray(value) ? value.join(",") : String(value);
    if (text !== "") params.set(key, text);
  }
  const url = location.pathname + location.search + "#" + params.toString();
  history.replaceState(null, "", url);
  $("permalink").href = url;
}

// -- elements --------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const fmt = (value, digits = 3) => (typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value));

function option(value, text, selected) {
  const node = el("option", { value, text: text || value });
  if (selected) node.selected = true;
  return node;
}

// -- models and the card ---------------------------------------------------------------

async function loadModels() {
  catalogue = await api("/api/models");
  const select = $("model");
  select.replaceChildren(...catalogue.models.map((m) => option(m.id, `${m.id} (${m.origin})`)));
  if (!state.model || !catalogue.models.some((m) => m.id === state.model)) state.model = catalogue.models[0].id;
  select.value = state.model;
}

async function loadCard() {
  card = await api("/api/card?model=" + encodeURIComponent(state.model));
  renderCard();
  renderMethods();
  renderLayers();
  await loadGallery();
}

function renderCard() {
  const rows = [
    ["architecture", card.architecture], ["task", card.task], ["input", card.input_shape.join("×") + ` (${card.kind})`],
    ["parameters", card.parameters.toLocaleString()], ["weights", card.weights],
  ];
  const metrics = Object.entries(card.metrics || {}).filter(([, v]) => typeof v === "number");
  const table = el("table", {}, ...rows.concat(metrics.map(([k, v]) => [k, fmt(v, 4)]))
    .map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: String(v) }))));
  const classes = el("p", { class: "classes", text: "classes: " + (card.class_names || []).join(", ") });
  $("card").replaceChildren(el("h2", { text: card.id }), table, classes);
  $("class-names").replaceChildren(...(card.class_names || []).map((name) => option(name)));
  $("class-filter").replaceChildren(option("", "all"), ...(card.class_names || []).map((n, i) => option(String(i), n)));
  $("class-filter").value = state.only;
}

function renderMethods() {
  const names = card.kind === "sequence"
    ? catalogue.temporal_methods.map((name) => ({ name, family: "temporal", paper: "" }))
    : catalogue.methods.filter((m) => m.family !== "attention");
  const valid = new Set(names.map((m) => m.name));
  state.methods = state.methods.filter((m) => valid.has(m));
  if (!state.methods.length) state.methods = [names[0].name];
  const boxes = names.map((m) => {
    const box = el("input", { type: "checkbox", value: m.name });
    box.checked = state.methods.includes(m.name);
    box.addEventListener("change", () => {
      state.methods = [...$("methods").querySelectorAll("input:checked")].map((b) => b.value);
      explainNow();
    });
    return el("label", { title: m.paper || m.family, class: "method" }, box, " " + m.name);
  });
  $("methods").replaceChildren(el("legend", { text: "methods" }), ...boxes);
}

function renderLayers() {
  const mapRows = card.layers.filter((r) => r.layout);
  const label = (r) => `${r.name}  ${(r.shape || []).join("×")}  ${r.layout}${r.default ? "  (default)" : ""}`;
  $("layer").replaceChildren(option("auto", `auto (${card.default_layer || "none"})`), ...mapRows.map((r) => option(r.name, label(r))));
  if (![...$("layer").options].some((o) => o.value === state.layer)) state.layer = "auto";
  $("layer").value = state.layer;
  $("filter-layer").replaceChildren(...mapRows.map((r) => option(r.name, label(r))));
  if (!state.flayer || !mapRows.some((r) => r.name === state.flayer)) state.flayer = card.default_layer || (mapRows[0] && mapRows[0].name) || "";
  $("filter-layer").value = state.flayer;
  $("upload").disabled = card.kind !== "image";
  $("layer").disabled = $("reshape").disabled = card.kind === "sequence";
}

// -- the gallery -----------------------------------------------------------------------

async function loadGallery() {
  galleryItems = [];
  $("gallery").replaceChildren();
  $("gallery-controls").hidden = true;
  if (!card.data || !card.data.items) {
    if (card.data && card.data.error) $("gallery").append(el("p", { class: "bad", text: card.data.error }));
    return;
  }
  const gallery = await api("/api/gallery?model=" + encodeURIComponent(state.model));
  galleryItems = gallery.items;
  $("gallery-controls").hidden = false;
  renderGallery();
}

function renderGallery() {
  let items = galleryItems.slice();
  if (state.only !== "") items = items.filter((it) => it.label.includes(Number(state.only)));
  const order = {
    "confidence-asc": (a, b) => a.confidence - b.confidence,
    "confidence-desc": (a, b) => b.confidence - a.confidence,
    "loss-desc": (a, b) => b.loss - a.loss,
    wrong: (a, b) => (a.correct - b.correct) || (b.loss - a.loss),
    index: (a, b) => a.index - b.index,
  }[state.sort] || ((a, b) => a.index - b.index);
  items.sort(order);
  $("sort").value = state.sort;
  $("gallery").replaceChildren(...items.map((it) => {
    const tip = `#${it.index} label ${it.label_names.join("+")}, predicted ${it.predicted_names.join("+")}, ` +
      `confidence ${fmt(it.confidence)}, loss ${fmt(it.loss)}`;
    const figure = el("figure", {
      class: "thumb" + (it.correct ? "" : " wrong") + (String(it.index) === state.item ? " chosen" : ""),
      title: tip, "data-index": String(it.index),
      on: { click: () => { state.item = String(it.index); state.upload = ""; renderGallery(); explainNow(); } },
    }, el("img", { src: it.src, alt: `item ${it.index}` }), el("figcaption", { text: `${it.predicted_names.join("+")} ${fmt(it.confidence, 2)}` }));
    return figure;
  }));
}

// -- explaining ------------------------------------------------------------------------

function source() {
  if (state.upload) return { upload: state.upload };
  if (state.item !== "") return { item: Number(state.item) };
  return null;
}

function targetValue() {
  return state.target === "class" ? state.cls : state.target;
}

async function explainNow() {
  writeHash();
  const input = source();
  if (!input || !state.methods.length || (state.target === "class" && !state.cls)) return;
  document.body.dataset.state = "running";
  setStatus("explaining…");
  try {
    const result = await runJob("explain", "/api/explain", Object.assign({
      model: state.model, methods: state.methods, target: targetValue(), layer: state.layer,
      reshape: state.reshape, score: state.score, cmap: state.cmap,
    }, input));
    if (!result) return;
    renderResult(result);
    setStatus("done");
    document.body.dataset.state = "done";
    if (state.tab === "filters") showFilters();
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
    $("results").replaceChildren(el("p", { class: "bad error", text: err.message }));
  }
}

function download(result, method, k, kind, text) {
  const url = withToken(`/api/download?key=${result.key}&kind=${kind}&method=${encodeURIComponent(method)}&k=${k}`);
  return el("a", { href: url, download: "", class: "download", text });
}

function renderResult(result) {
  const pred = result.prediction.map((p) => `${p.name} ${fmt(p.probability, 3)}`).join(" · ");
  const label = result.input.label == null ? "" : ` — label: ${[].concat(result.input.label).join("+")}`;
  $("prediction").replaceChildren(el("p", { text: `model says: ${pred}${label}` }),
    ...(result.warnings || []).map((text) => el("p", { class: "warning", text: "note: " + text })),
    el("img", { class: "colorbar", src: result.colorbar, alt: `colour bar ${result.cmap}` }),
    el("span", { class: "colorbar-labels", text: "0 (low) … 1 (high)" }));
  const columns = result.methods.map((block) => {
    const maps = block.maps.map((m) => el("figure", { class: "map" + (m.degenerate ? " degenerate" : "") },
      el("div", { class: "stack " + result.kind },
        el("img", { class: "base", src: result.input.src, alt: "input" }),
        el("img", { class: "heat", src: m.src, alt: `${block.method} map for ${m.name}` })),
      el("figcaption", {},
        el("span", { class: "target", text: m.name }),
        el("span", { class: "score", text: ` score ${fmt(m.score)} · p=${fmt(m.probability)}` }),
        m.degenerate ? el("span", { class: "bad", text: " (constant map)" }) : null),
      el("div", { class: "downloads" },
        download(result, block.method, m.k, "png", "PNG"), " ",
        download(result, block.method, m.k, "npy", ".npy"), " ",
        download(result, block.method, m.k, "raw", "raw .npy"), " ",
        download(result, block.method, m.k, "json", "JSON"))));
    const where = block.layer ? ` @ ${block.layer}` : "";
    return el("div", { class: "method-column" }, el("h3", { text: block.method + where }), ...maps);
  });
  $("results").replaceChildren(...columns);
  const states = result.states;
  $("states").replaceChildren(...(states && states.src ? [
    el("h3", { text: "LSTM gates and cell state" }),
    el("p", { text: Object.entries(states.summary).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ") }),
    el("img", { class: "states", src: states.src, alt: "LSTM gates" }),
  ] : []));
  applyOpacity();
}

function applyOpacity() {
  for (const img of document.querySelectorAll(".stack.image img.heat")) img.style.opacity = state.opacity;
}

// -- filters ---------------------------------------------------------------------------

async function showFilters() {
  writeHash();
  const input = source();
  if (!input) { $("filters").replaceChildren(el("p", { class: "hint", text: "pick an input first" })); return; }
  try {
    const result = await runJob("filters", "/api/filters", Object.assign({ model: state.model, layer: state.flayer }, input));
    if (!result) return;
    const parts = [];
    if (result.states && result.states.src) parts.push(el("img", { class: "states", src: result.states.src, alt: "LSTM gates" }));
    if (result.kernels) {
      parts.push(el("h3", { text: `kernels of ${result.kernels.layer} (${result.kernels.shape.join("×")}, ${result.kernels.reduce})` }),
        el("img", { class: "kernels", src: result.kernels.src, alt: "kernels" }));
    } else if (result.kernels_note) parts.push(el("p", { class: "hint", text: result.kernels_note }));
    if (result.channels) {
      parts.push(el("h3", { text: `activations of ${result.layer}: ${result.channels.length} of ${result.total_channels} channels, strongest first (click one)` }));
      parts.push(el("div", { class: "channels" }, ...result.channels.map((c) => el("figure", {
        class: "channel" + (String(c.index) === state.channel ? " chosen" : ""), "data-channel": String(c.index),
        on: { click: () => { state.channel = String(c.index); showChannel(); } },
      }, el("img", { src: c.src, alt: `channel ${c.index}` }), el("figcaption", { text: `${c.index}: ${fmt(c.mean, 2)}` })))));
    }
    $("filters").replaceChildren(...parts);
    if (state.channel !== "") showChannel();
  } catch (err) {
    $("filters").replaceChildren(el("p", { class: "bad error", text: err.message }));
  }
}

async function showChannel() {
  writeHash();
  const channel = Number(state.channel);
  const box = $("channel");
  box.replaceChildren(el("h3", { text: `channel ${channel} of ${state.flayer}` }));
  const payload = { model: state.model, layer: state.flayer, channel, steps: Number(state.steps) };
  try {
    const found = await runJob("maximize", "/api/maximize", payload);
    if (found) {
      box.append(el("figure", { class: "maximized" }, el("img", { src: found.src, alt: "activation maximization" }),
        el("figcaption", { text: `maximization, ${found.steps} steps: score ${fmt(found.score)}${found.flat ? " (flat)" : ""}` })));
    }
    if (card.data && card.data.items) {
      const ex = await runJob("exemplars", "/api/exemplars", payload);
      if (ex) {
        box.append(el("div", { class: "exemplars" }, ...ex.items.map((it) => el("figure", {
          title: "explain this item", on: { click: () => { state.item = String(it.index); state.upload = ""; showTab("maps"); explainNow(); } },
        }, el("img", { src: it.src, alt: `exemplar ${it.index}` }), el("figcaption", { text: `#${it.index}: ${fmt(it.value, 2)}` })))));
      }
    }
  } catch (err) {
    box.append(el("p", { class: "bad error", text: err.message }));
  }
}

function showTab(name) {
  state.tab = name;
  for (const button of document.querySelectorAll("button.tab")) button.classList.toggle("active", button.dataset.tab === name);
  $("maps-tab").hidden = name !== "maps";
  $("filters-tab").hidden = name !== "filters";
  writeHash();
}

// -- wiring ----------------------------------------------------------------------------

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  setStatus("uploading…");
  try {
    const body = await api("/api/upload", { method: "POST", body: form });
    state.upload = body.image;
    state.item = "";
    renderGallery();
    explainNow();
  } catch (err) {
    // One clear message, in the status line; the maps of the previous input go, so no
    // picture can be taken for the refused file.
    $("upload").value = "";
    $("results").replaceChildren();
    $("prediction").replaceChildren();
    $("states").replaceChildren();
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  }
}

function bind() {
  $("model").addEventListener("change", async () => {
    state.model = $("model").value; state.item = ""; state.upload = ""; state.layer = "auto"; state.channel = "";
    $("results").replaceChildren(); $("prediction").replaceChildren(); $("states").replaceChildren();
    await loadCard(); writeHash();
  });
  $("upload").addEventListener("change", () => { if ($("upload").files[0]) upload($("upload").files[0]); });
  $("target").addEventListener("change", () => {
    state.target = $("target").value; $("class-pick").hidden = state.target !== "class"; explainNow();
  });
  $("class-name").addEventListener("change", () => { state.cls = $("class-name").value; explainNow(); });
  for (const [id, key] of [["layer", "layer"], ["reshape", "reshape"], ["score", "score"], ["cmap", "cmap"]]) {
    $(id).addEventListener("change", () => { state[key] = $(id).value; explainNow(); });
  }
  $("opacity").addEventListener("input", () => { state.opacity = $("opacity").value; applyOpacity(); writeHash(); });
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; renderGallery(); writeHash(); });
  $("class-filter").addEventListener("change", () => { state.only = $("class-filter").value; renderGallery(); writeHash(); });
  $("run").addEventListener("click", explainNow);
  $("cancel").addEventListener("click", () => {
    const id = $("cancel").dataset.job;
    if (id) api(`/api/jobs/${id}/cancel`, { method: "POST" }).catch(() => {});
  });
  for (const button of document.querySelectorAll("button.tab")) {
    button.addEventListener("click", () => { showTab(button.dataset.tab); if (button.dataset.tab === "filters") showFilters(); });
  }
  $("filter-layer").addEventListener("change", () => { state.flayer = $("filter-layer").value; state.channel = ""; $("channel").replaceChildren(); showFilters(); });
  $("steps").addEventListener("change", () => { state.steps = $("steps").value; writeHash(); });
  $("show-filters").addEventListener("click", showFilters);
}

function applyState() {
  if (/^top:\d+$/.test(state.target) && ![...$("target").options].some((o) => o.value === state.target)) {
    $("target").add(option(state.target, "top " + state.target.slice(4)), $("target").options[4]);
  }
  if (![...$("target").options].some((o) => o.value === state.target)) state.target = "predicted";
  $("target").value = state.target;
  $("class-pick").hidden = state.target !== "class";
  $("class-name").value = state.cls;
  $("reshape").value = state.reshape;
  $("score").value = state.score;
  $("cmap").value = state.cmap;
  $("opacity").value = state.opacity;
  $("steps").value = state.steps;
}

async function start() {
  readHash();
  bind();
  applyState();
  try {
    await loadModels();
    await loadCard();
    showTab(state.tab);
    document.body.dataset.state = "ready";
    writeHash();
    if (source()) await explainNow();
    else if (state.tab === "filters") showFilters();
  } catch (err) {
    setStatus(err.message, true);
    document.body.dataset.state = "error";
  }
}

start();
