// The page's predictor: window.kitPredict(url) -> Promise of the JSON answer (the service's and kit.predict's).
(function () {
  const meta = /*kit:meta*/null;
  const files = /*kit:files*/null;
  const status = document.getElementById("status");

  function load(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src; script.onload = resolve; script.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(script);
    });
  }

  async function chooseBackend() {
    const asked = new URLSearchParams(location.search).get("backend");
    if (asked === "wasm" || asked === "webgpu") return asked;
    try {
      if (navigator.gpu && await navigator.gpu.requestAdapter()) return "webgpu";
    } catch (e) { /* no WebGPU here */ }
    return "wasm";
  }

  async function start() {
    let backend = await chooseBackend();
    await load("ort/" + files[backend][0]);
    ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
    // threads need SharedArrayBuffer, which only a cross-origin isolated page has (the COOP/COEP headers)
    const threads = self.crossOriginIsolated ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = threads;
    // the resize runs on WebAssembly (onnxruntime-web's WebGPU Resize has no antialiasing), the model where chosen
    const resize = await ort.InferenceSession.create("resize.onnx", { executionProviders: ["wasm"] });
    let model;
    try {
      model = await ort.InferenceSession.create("model.onnx", { executionProviders: [backend],
                                                                graphOptimizationLevel: "all" });
    } catch (e) {
      if (backend !== "webgpu") throw e;
      backend = "wasm";                      // WebGPU offered but failing: fall back, and say so
      model = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
    }
    window.kitBackend = { name: backend, threads: backend === "wasm" ? threads : 0, isolated: !!self.crossOriginIsolated };
    return { resize, model };
  }
  const sessions = start();

  async function pixels(blob) {
    // decode at the file's own size, as Pillow does: EXIF orientation applied, no colour management
    const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none",
                                                  premultiplyAlpha: "none" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
    }
    return new ort.Tensor("uint8", rgb, [1, bitmap.height, bitmap.width, 3]);
  }

  function formatG(v) {                      // Python's format(v, ".6g"): a regression's submission cell
    if (!isFinite(v)) return String(v);
    if (v === 0) return Object.is(v, -0) ? "-0" : "0";
    const [mantissa, exponent] = v.toExponential(5).split("e");
    const e = parseInt(exponent, 10);
    const strip = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
    if (e < -4 || e >= 6) return strip(mantissa) + "e" + (e < 0 ? "-" : "+") + String(Math.abs(e)).padStart(2, "0");
    return strip(v.toFixed(5 - e));
  }

  function decode(values) {                 // the answer's shape comes from the graph's metadata (kit.answer)
    const names = meta.classes, spec = meta.answer;
    if (spec.label === "value") return { label: formatG(values[0]), value: values[0] };
    const probabilities = {};                // most probable first, ties in output order (as Task.answer)
    values.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .forEach(([v, i]) => { probabilities[names[i]] = v; });
    if (spec.label === "thresholds") {
      const thresholds = spec.thresholds;
      let tags = names.filter((name, i) => values[i] >= thresholds[i]);
      const least = spec.min_labels;
      if (tags.length < least) {
        tags = names.map((name, i) => [values[i], i, name]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
          .slice(0, least).sort((a, b) => a[1] - b[1]).map((t) => t[2]);
      }
      return { label: tags.join(" "), probabilities };
    }
    let best = 0;
    values.forEach((v, i) => { if (v > values[best]) best = i; });
    return { label: names[best], probabilities };
  }

  async function predictBlob(blob) {
    const input = await pixels(blob);
    const { resize, model } = await sessions;
    const resized = await resize.run({ image: input });
    const output = await model.run({ images: resized.images });
    return decode(Array.from(output.probabilities.data));
  }

  window.kitPredict = async function (url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error("cannot fetch " + url + ": " + response.status);
    return predictBlob(await response.blob());
  };

  function escape(text) {
    const span = document.createElement("span");
    span.textContent = String(text);
    return span.innerHTML;
  }

  function show(file) {
    const url = URL.createObjectURL(file);
    const div = document.createElement("div");
    div.className = "result";
    div.innerHTML = `<img src="${url}"><div><div class="name">${escape(file.name)}</div><i>predicting...</i></div>`;
    document.getElementById("results").prepend(div);
    const t0 = performance.now();
    predictBlob(file).then((result) => {
      const rows = Object.entries(result.probabilities || {}).slice(0, 5)
        .map(([name, p]) => `<tr><td>${escape(name)}</td><td>${p.toFixed(4)}</td></tr>`).join("");
      div.lastChild.innerHTML = `<div class="name">${escape(file.name)}</div><b>${escape(result.label)}</b> ` +
        `<small>(${(performance.now() - t0).toFixed(0)} ms)</small><table>${rows}</table>`;
    }).catch((e) => {                        // the error stays with its file; the next files go on
      div.classList.add("error");
      div.lastChild.innerHTML = `<div class="name">${escape(file.name)}</div>cannot read this image: ${escape(e.message)}`;
    });
  }

  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    [...e.dataTransfer.files].forEach(show);
  });
  document.getElementById("picker").addEventListener("change", (e) => { [...e.target.files].forEach(show); });
  sessions.then(() => {
    window.kitReady = true;
    const b = window.kitBackend;
    status.textContent = `Ready: ${meta.model}, ${meta.classes.length} outputs (${meta.task}); runs in this browser on ` +
      (b.name === "webgpu" ? "WebGPU" : `WebAssembly, ${b.threads} thread${b.threads === 1 ? "" : "s"}` +
       (b.isolated ? "" : " (not cross-origin isolated: serve the folder with its COOP/COEP headers for more)")) + ".";
  }).catch((e) => { status.textContent = "Cannot load the model: " + e.message; window.kitError = e.message; });
})();
