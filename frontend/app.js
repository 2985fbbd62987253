// dermcam page: choose an image → predict → Grad-CAM for the top class (or any class clicked).
// Plain JavaScript, no build step. The function URLs come from config.js.
(() => {
  "use strict";

  const config = window.DERMCAM_CONFIG || {};
  const trim = (url) => (url || "").replace(/\/+$/, "");
  const predictUrl = trim(config.predictUrl);
  const gradcamUrl = trim(config.gradcamUrl);
  const $ = (id) => document.getElementById(id);

  const ui = {
    dropzone: $("dropzone"), fileInput: $("file-input"), cameraInput: $("camera-input"),
    viewer: $("viewer"), preview: $("preview"), overlay: $("overlay"),
    caption: $("viewer-caption"), camControls: $("cam-controls"), opacity: $("opacity"),
    download: $("download"), predictOnly: $("predict-only"), status: $("status"),
    error: $("error"), errorMessage: $("error-message"), retry: $("retry"),
    modelInfo: $("model-info"), explainHint: $("explain-hint"),
    predictions: $("predictions"), demoBanner: $("demo-banner"),
  };

  const state = {
    file: null, previewUrl: null, predictions: [], selected: null,
    method: "gradcam", request: 0, retry: null,
  };

  // --- small helpers -------------------------------------------------------------------

  function setStatus(text, busy = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("busy", busy);
  }

  function showError(message, retry) {
    ui.errorMessage.textContent = message;
    ui.error.hidden = false;
    ui.retry.hidden = !retry;
    state.retry = retry;
    setStatus("");
  }

  function clearError() {
    ui.error.hidden = true;
    state.retry = null;
  }

  function percent(p) {
    const value = p * 100;
    if (value < 0.1) return "< 0.1 %";
    return value >= 10 ? `${value.toFixed(0)} %` : `${value.toFixed(1)} %`;
  }

  async function callFunction(url, file, fields) {
    const form = new FormData();
    form.append("image", file, file.name || "image");
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    let response;
    try {
      response = await fetch(url, { method: "POST", body: form });
    } catch (err) {
      throw new Error("The service could not be reached. Check the connection and try again.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error && body.error.message;
      throw new Error(message || `The service answered with status ${response.status}.`);
    }
    return body;
  }

  function loadImage(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("The heatmap could not be loaded."));
      img.src = src;
    });
  }

  // --- choosing an image ---------------------------------------------------------------

  function choose(file) {
    if (!file) return;
    clearError();
    state.file = file;
    state.selected = null;
    state.predictions = [];
    ui.predictions.replaceChildren();
    ui.modelInfo.hidden = true;
    ui.explainHint.hidden = true;
    ui.overlay.hidden = true;
    ui.overlay.removeAttribute("src");
    ui.download.hidden = true;
    ui.caption.textContent = "";
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    ui.preview.onerror = () => { ui.viewer.hidden = true; };
    ui.preview.onload = () => { ui.viewer.hidden = false; };
    ui.preview.src = state.previewUrl; // <img> applies EXIF orientation: the preview is upright
    predict();
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

  // --- predict -------------------------------------------------------------------------

  async function predict() {
    const id = ++state.request;
    setStatus("Classifying… the first request can take a few seconds while the model starts.", true);
    try {
      const body = await callFunction(predictUrl, state.file, {});
      if (id !== state.request) return;
      state.predictions = body.predictions;
      renderPredictions(body);
      setStatus(`Most likely: ${body.top.name} (${percent(body.top.probability)}).`);
      if (gradcamUrl) explain(body.top.code);
    } catch (err) {
      if (id === state.request) showError(err.message, predict);
    }
  }

  function renderPredictions(body) {
    const model = body.model;
    ui.demoBanner.hidden = !model.demo;
    ui.modelInfo.textContent = `Model ${model.name}, version ${model.version}${model.demo ? " (demo)" : ""}`;
    ui.modelInfo.hidden = false;
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
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `${p.name} `;
      const code = document.createElement("span");
      code.className = "code";
      code.textContent = p.code;
      name.append(code);
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
  }

  // --- gradcam -------------------------------------------------------------------------

  async function explain(code) {
    if (!gradcamUrl || !state.file) return;
    clearError();
    state.selected = code;
    for (const button of ui.predictions.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.code === code));
    }
    const label = state.predictions.find((p) => p.code === code);
    const id = ++state.request;
    setStatus(`Computing where the model looked for ${label ? label.name : code}…`, true);
    try {
      const body = await callFunction(gradcamUrl, state.file, { class: code, method: state.method });
      if (id !== state.request) return;
      ui.overlay.crossOrigin = body.heatmap.url.startsWith("data:") ? null : "anonymous";
      await loadImage(ui.overlay, body.heatmap.url);
      if (id !== state.request) return;
      ui.overlay.hidden = false;
      ui.overlay.alt = `Heatmap for ${body.target.name}`;
      ui.camControls.hidden = false;
      ui.download.hidden = false;
      const method = body.method === "gradcam++" ? "Grad-CAM++" : "Grad-CAM";
      ui.caption.textContent = `${method} for ${body.target.name} (${percent(body.target.probability)}): ` +
        "warm colours mark the regions that raised this class's score.";
      setStatus(`Showing where the model looked for ${body.target.name}.`);
    } catch (err) {
      if (id === state.request) showError(err.message, () => explain(code));
    }
  }

  for (const radio of document.querySelectorAll("input[name=method]")) {
    radio.addEventListener("change", () => {
      state.method = radio.value;
      if (state.selected) explain(state.selected);
    });
  }

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
})();
