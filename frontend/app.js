// dermcam page: choose a photo → one small upload → ranked classes and where the model looked
// (or any class clicked). Plain JavaScript, no build step. The function URLs come from
// config.js; photo.js prepares the upload, api.js talks to the functions, model.js shows
// what the model is and asks for its patient fields.
(() => {
  "use strict";

  const config = window.DERMCAM_CONFIG || {};
  const trim = (url) => (url || "").replace(/\/+$/, "");
  const predictUrl = trim(config.predictUrl);
  const gradcamUrl = trim(config.gradcamUrl);
  const { prepare } = window.DermcamPhoto;
  const api = window.DermcamApi;
  const model = window.DermcamModel;
  const trust = window.DermcamTrust;
  const $ = (id) => document.getElementById(id);
  const COLD_HINT_MS = 4000; // waiting longer than this means an instance is starting
  const methodNames = { "gradcam": "Grad-CAM" }; // filled from the model's description

  const ui = {
    dropzone: $("dropzone"), fileInput: $("file-input"), cameraInput: $("camera-input"),
    viewer: $("viewer"), preview: $("preview"), overlay: $("overlay"),
    caption: $("viewer-caption"), camControls: $("cam-controls"), opacity: $("opacity"),
    methods: $("methods"), download: $("download"), predictOnly: $("predict-only"),
    status: $("status"), progress: $("progress"), error: $("error"),
    errorMessage: $("error-message"), retry: $("retry"), modelInfo: $("model-info"),
    explainHint: $("explain-hint"), independent: $("independent"),
    predictions: $("predictions"), demoBanner: $("demo-banner"), verdict: $("verdict"),
    patient: $("patient"), patientFields: $("patient-fields"),
  };

  const state = {
    photo: null, previewUrl: null, predictions: [], selected: null, method: "gradcam",
    request: 0, retry: null, model: null, schema: null,
  };

  // --- small helpers -------------------------------------------------------------------

  function setStatus(text, busy = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("busy", busy);
  }

  function setProgress(fraction) {
    ui.progress.hidden = fraction === null;
    if (fraction !== null) ui.progress.value = Math.round(fraction * 100);
  }

  function showError(message, retry) {
    ui.errorMessage.textContent = message;
    ui.error.hidden = false;
    ui.retry.hidden = !retry;
    state.retry = retry;
    setStatus("");
    setProgress(null);
  }

  // A photo the model declined: no ranking, no map, only why and what to do instead.
  function failed(err, retry) {
    if (!err.abstain) {
      showError(err.message, retry);
      return;
    }
    state.predictions = [];
    ui.predictions.replaceChildren();
    ui.verdict.replaceChildren();
    ui.verdict.hidden = true;
    ui.overlay.hidden = true;
    ui.camControls.hidden = true;
    ui.download.hidden = true;
    ui.explainHint.hidden = true;
    ui.caption.textContent = "";
    showError(err.message, null); // the function's words: the reason, then what to do
    ui.error.dataset.abstain = err.abstain.reason;
  }

  function clearError() {
    delete ui.error.dataset.abstain;
    ui.error.hidden = true;
    state.retry = null;
  }

  function percent(p) {
    const value = p * 100;
    if (value < 0.1) return "< 0.1 %";
    return value >= 10 ? `${value.toFixed(0)} %` : `${value.toFixed(1)} %`;
  }

  function loadImage(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("The heatmap could not be loaded."));
      img.src = src;
    });
  }

  // One call, with its steps shown: uploading (with progress), then the server's work,
  // then a cold-start note if the answer is slow to come.
  async function call(url, fields, working) {
    let coldTimer = null;
    const onProgress = (stage, fraction) => {
      if (stage === "upload") {
        setStatus(`Uploading the photo… ${Math.round(fraction * 100)} %`, true);
        setProgress(fraction);
        return;
      }
      setProgress(null);
      setStatus(working, true);
      coldTimer = setTimeout(() => {
        setStatus(`${working} The service is starting up; the first request after a pause` +
          " can take several seconds.", true);
      }, COLD_HINT_MS);
    };
    setStatus("Uploading the photo…", true);
    try {
      return await api.post(url, state.photo, { ...fields, ...model.patientValues(ui.patientFields) }, onProgress);
    } finally {
      clearTimeout(coldTimer);
      setProgress(null);
    }
  }

  // --- the model's description: metadata form, methods --------------------------------

  let patientTimer = null;
  function onPatientChange() {
    clearTimeout(patientTimer);
    patientTimer = setTimeout(() => { if (state.photo) analyse(state.selected); }, 250);
  }

  function buildMethods(methods) {
    for (const { code, name } of methods) methodNames[code] = name;
    const radios = methods.map(({ code: method, name }) => {
      const label = document.createElement("label");
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "method";
      radio.value = method;
      radio.checked = method === state.method;
      radio.addEventListener("change", () => {
        state.method = method;
        if (state.selected) analyse(state.selected);
      });
      label.append(radio, ` ${name}`);
      return label;
    });
    const legend = ui.methods.querySelector("legend");
    ui.methods.replaceChildren(legend, ...radios);
  }

  async function describeModel() {
    try {
      state.model = await api.describe(gradcamUrl || predictUrl);
    } catch (err) {
      return; // the first upload will say what is wrong
    }
    renderModel(state.model.model);
    if (state.model.metadata) {
      state.schema = state.model.metadata;
      model.buildPatientForm(ui.patientFields, state.schema, onPatientChange);
      ui.patient.hidden = false;
    }
    if (state.model.methods) buildMethods(state.model.methods);
    model.renderCard(state.model.card, state.model.labels, percent);
  }

  function renderModel(model) {
    ui.demoBanner.hidden = !model.demo;
    ui.modelInfo.textContent = `Model “${model.name}”, version ${model.version}${model.demo ? " (demo)" : ""}`;
    ui.modelInfo.hidden = false;
    ui.independent.hidden = model.probabilities !== "independent";
  }

  // --- choosing a photo ----------------------------------------------------------------

  async function choose(file) {
    if (!file) return;
    clearError();
    const id = ++state.request;
    state.photo = null;
    state.selected = null;
    state.predictions = [];
    ui.predictions.replaceChildren();
    ui.explainHint.hidden = true;
    ui.overlay.hidden = true;
    ui.overlay.removeAttribute("src");
    ui.download.hidden = true;
    ui.caption.textContent = "";
    setStatus("Preparing the photo…", true);
    const photo = await prepare(file);
    if (id !== state.request) return;
    state.photo = photo;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    // The prepared copy is upright and small; a file the browser cannot decode is shown as is.
    state.previewUrl = URL.createObjectURL(photo.prepared ? photo.blob : file);
    ui.preview.onerror = () => { ui.viewer.hidden = true; };
    ui.preview.onload = () => { ui.viewer.hidden = false; };
    ui.preview.src = state.previewUrl;
    analyse(null);
  }

  ui.fileInput.addEventListener("change", () => { choose(ui.fileInput.files[0]); ui.fileInput.value = ""; });
  ui.cameraInput.addEventListener("change", () => { choose(ui.cameraInput.files[0]); ui.cameraInput.value = ""; });

  ui.dropzone.addEventListener("keydown", (event) => {
    if (event.target === ui.dropzone && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      ui.fileInput.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    ui.dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      ui.dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    ui.dropzone.addEventListener(type, () => ui.dropzone.classList.remove("dragging"));
  }
  ui.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    choose(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])][0];
    if (file) choose(file);
  });

  // --- one call per photo: gradcam answers the ranking and the top class's map -----------

  function analyse(code) {
    return gradcamUrl ? explain(code) : predictOnly();
  }

  async function predictOnly() {
    clearError();
    const id = ++state.request;
    try {
      const body = await call(predictUrl, {}, "Classifying…");
      if (id !== state.request) return;
      showPredictions(body);
      setStatus(`Most likely: ${body.top.name} (${percent(body.top.probability)}).`);
    } catch (err) {
      if (id === state.request) failed(err, predictOnly);
    }
  }

  // `code` null: the top class (the first call for a photo: one upload gives both the
  // ranking and its map). A class clicked later resends the small prepared copy.
  async function explain(code) {
    if (!state.photo) return;
    clearError();
    const id = ++state.request;
    if (code) markSelected(code);
    const label = code && state.predictions.find((p) => p.code === code);
    const fields = { method: state.method };
    if (code) fields.class = code;
    const working = label ? `Computing where the model looked for ${label.name}…`
      : "Classifying and explaining…";
    try {
      const body = await call(gradcamUrl, fields, working);
      if (id !== state.request) return;
      showPredictions(body);
      state.selected = body.target.code;
      markSelected(state.selected);
      setStatus(`Most likely: ${body.top.name} (${percent(body.top.probability)}). Loading the heatmap…`, true);
      ui.overlay.crossOrigin = body.heatmap.url.startsWith("data:") ? null : "anonymous";
      await loadImage(ui.overlay, body.heatmap.url);
      if (id !== state.request) return;
      showHeatmap(body);
    } catch (err) {
      if (id === state.request) failed(err, () => explain(code));
    }
  }

  function showHeatmap(body) {
    ui.overlay.hidden = false;
    ui.overlay.alt = `Heatmap for ${body.target.name}`;
    ui.camControls.hidden = false;
    ui.download.hidden = false;
    const method = methodNames[body.method] || body.method;
    const target = `${body.target.name} (${percent(body.target.probability)})`;
    ui.caption.textContent = body.heatmap.empty ? blankCaption(method, body.method, target)
      : `${method} for ${target}: warm colours mark the regions that raised this class's score.`;
    setStatus(`Most likely: ${body.top.name} (${percent(body.top.probability)}). ` +
      (body.heatmap.empty ? `${method} shows nothing for ${body.target.name}.`
        : `Showing where the model looked for ${body.target.name}.`));
  }

  // A map negative everywhere is blank after the ReLU: say so, or an empty overlay reads as
  // "nothing here". Methods that weigh only positive gradients (Grad-CAM++, LayerCAM) show one.
  function blankCaption(method, code, target) {
    const others = ["gradcam++", "layercam"].filter((m) => m !== code && methodNames[m])
      .map((m) => methodNames[m]);
    return `${method} found no region that raised the score of ${target} on this photo, ` +
      "so its map is blank. That says nothing about the lesion" +
      (others.length ? `; ${others.join(" or ")} usually show where the model looked.` : ".");
  }

  function markSelected(code) {
    for (const button of ui.predictions.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.code === code));
    }
  }

  function showPredictions(body) {
    state.predictions = body.predictions;
    renderModel(body.model);
    ui.explainHint.hidden = !gradcamUrl;
    const rows = body.predictions.map((p, rank) => {
      const item = document.createElement("li");
      if (rank === 0) item.classList.add("top");
      const row = document.createElement(gradcamUrl ? "button" : "div");
      if (gradcamUrl) {
        row.type = "button";
        row.setAttribute("aria-pressed", "false");
        row.addEventListener("click", () => explain(p.code));
      } else {
        row.className = "row";
      }
      row.dataset.code = p.code;
      row.dataset.probability = String(p.probability);
      const described = (state.model && state.model.labels || []).find((l) => l.code === p.code);
      if (described && described.description) row.title = described.description;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.name;
      if (p.code !== p.name) {  // labels given as codes only (benign,malignant) name themselves
        const code = document.createElement("span");
        code.className = "code";
        code.textContent = p.code;
        name.append(" ", code);
      }
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = percent(p.probability);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${Math.max(0.5, p.probability * 100)}%`;
      bar.append(fill);
      row.append(name, pct, bar);
      item.append(row);
      return item;
    });
    ui.predictions.replaceChildren(...rows);
    ui.verdict.replaceChildren(...trust.render(body));
    ui.verdict.hidden = false;
  }

  // --- heatmap controls ----------------------------------------------------------------

  ui.opacity.addEventListener("input", () => {
    ui.overlay.style.opacity = String(ui.opacity.value / 100);
  });
  ui.overlay.style.opacity = String(ui.opacity.value / 100);

  ui.download.addEventListener("click", (event) => {
    event.preventDefault();
    const canvas = document.createElement("canvas");
    canvas.width = ui.overlay.naturalWidth;
    canvas.height = ui.overlay.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(ui.preview, 0, 0, canvas.width, canvas.height);
    context.globalAlpha = ui.opacity.value / 100;
    context.drawImage(ui.overlay, 0, 0, canvas.width, canvas.height);
    try {
      canvas.toBlob((blob) => {
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = `dermcam-${state.selected || "heatmap"}.png`;
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      }, "image/png");
    } catch (err) {
      showError("The overlay could not be saved from this page.", null);
    }
  });

  ui.retry.addEventListener("click", () => {
    const retry = state.retry;
    clearError();
    if (retry) retry();
  });

  // --- start ---------------------------------------------------------------------------

  if (!gradcamUrl) ui.predictOnly.hidden = false;
  if (!predictUrl) showError("This page has no predict URL configured (config.js).", null);
  else describeModel();
})();
