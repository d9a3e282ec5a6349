// vild's page: one image, a category list and a threshold go to POST
// /v1/detect as multipart; the boxes come back and are drawn on a canvas,
// with the instance masks (COCO RLE) tinted in when the toggle asks for them.
// Boxes drawn on the picture define categories by example: with any, the
// request is JSON and carries them as exemplars (each with the picture it
// was drawn on, so it keeps working on other pictures).
// A server that answers 401 needs an API key: the page asks for one, keeps
// it in sessionStorage (this tab only) and sends it as a Bearer token.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const state = { file: null, img: null, timer: null, seq: 0, imageId: 0, b64: null,
    detections: [], examples: [], drawing: null };
  const ANSWER_TIMEOUT_MS = 60000; // the page never waits longer than this for an answer
  // Exposed for the browser test and the curious: the last answer and the
  // boxes as drawn, in canvas pixels.
  window.vild = { lastResponse: null, lastError: null, drawnBoxes: [], drawnMasks: 0, drawnExamples: 0 };
  const MASK_ALPHA = 0.45;

  // rleCounts is pycocotools' rleFrString: a COCO RLE's compressed counts.
  function rleCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = true;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  // maskCanvas paints an RLE mask (column-major runs, zeros first) in color
  // on a canvas of the image's size.
  function maskCanvas(rle, color) {
    const [h, w] = rle.size;
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    const mctx = c.getContext("2d");
    const data = mctx.createImageData(w, h);
    let i = 0;
    rleCounts(rle.counts).forEach((n, k) => {
      if (k % 2 === 1) {
        for (let j = i; j < i + n; j++) data.data[4 * ((j % h) * w + Math.floor(j / h)) + 3] = 255;
      }
      i += n;
    });
    mctx.putImageData(data, 0, 0);
    mctx.globalCompositeOperation = "source-in";
    mctx.fillStyle = color;
    mctx.fillRect(0, 0, w, h);
    return c;
  }

  function colorFor(label) { // the same hue for the same label
    let h = 0;
    for (const c of label) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return "hsl(" + (h % 360) + ", 90%, 45%)";
  }

  const KEY_ITEM = "vild-api-key";
  function storedKey() {
    try { return sessionStorage.getItem(KEY_ITEM) || ""; } catch (e) { return ""; }
  }
  function storeKey(k) {
    try {
      if (k) sessionStorage.setItem(KEY_ITEM, k); else sessionStorage.removeItem(KEY_ITEM);
    } catch (e) { /* storage off: the key lives in the field only */ }
  }
  function apiKey() { return $("key").value.trim() || storedKey(); }
  function askForKey() {
    $("key-box").hidden = false;
    if (!$("key").value) $("key").focus();
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
    window.vild.lastError = msg || null;
  }

  // fail ends a detection or a load with an error: no status, no boxes, no rows.
  function fail(msg) {
    $("status").textContent = "";
    showError(msg);
    draw([]);
    fillTable(null);
  }

  function setImage(blob) {
    state.seq++; // an answer still on its way is for the previous image
    showError("");
    const url = URL.createObjectURL(blob);
    const img = new Image();
    img.onload = () => {
      URL.revokeObjectURL(url);
      state.file = blob;
      state.img = img;
      state.imageId++;
      state.b64 = null;
      state.drawing = null; // a drag in progress was on the previous picture
      $("detect").disabled = false;
      $("example-draw").disabled = false;
      showExamples();
      draw([]);
      detect();
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      state.file = null;
      state.img = null;
      $("detect").disabled = true;
      setDrawing(false);
      $("example-draw").disabled = true;
      clearCanvas();
      fail("This file is not an image the browser can show: pick a JPEG, PNG, GIF or WebP.");
    };
    img.src = url;
  }

  function clearCanvas() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.boxes = "0";
    window.vild.drawnBoxes = [];
  }

  function drawScale() { return Math.min(1, 900 / state.img.naturalWidth); }

  function draw(detections) {
    const img = state.img;
    if (!img) return;
    state.detections = detections;
    const scale = drawScale();
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    window.vild.drawnMasks = 0;
    for (const d of detections) {
      if (!d.mask) continue;
      ctx.globalAlpha = MASK_ALPHA;
      ctx.drawImage(maskCanvas(d.mask, colorFor(d.label)), 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
      window.vild.drawnMasks++;
    }
    const lw = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 150));
    ctx.lineWidth = lw;
    ctx.font = "bold 13px system-ui, sans-serif";
    ctx.textBaseline = "top";
    window.vild.drawnBoxes = [];
    for (const d of detections) {
      const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
      const color = colorFor(d.label);
      ctx.strokeStyle = color;
      ctx.strokeRect(x1 + lw / 2, y1 + lw / 2, Math.max(0, x2 - x1 - lw), Math.max(0, y2 - y1 - lw));
      const text = d.label + " " + d.score.toFixed(2);
      const tw = ctx.measureText(text).width + 6;
      const ty = y1 >= 18 ? y1 - 18 : y1;
      ctx.fillStyle = color;
      ctx.fillRect(x1, ty, tw, 18);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, x1 + 3, ty + 2);
      window.vild.drawnBoxes.push({ label: d.label, color, box: [x1, y1, x2, y2], lineWidth: lw });
    }
    canvas.dataset.boxes = String(detections.length);
    // The examples drawn on this picture, dashed, and the box being drawn.
    const dashed = state.examples.filter((e) => e.imageId === state.imageId).map((e) => e.box.map((v) => v * scale));
    if (state.drawing && state.drawing.to) dashed.push(rect(state.drawing.from, state.drawing.to));
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#000";
    for (const [x1, y1, x2, y2] of dashed) ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
    window.vild.drawnExamples = dashed.length;
  }

  function rect(a, b) {
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  }

  // fillTable lists the detections; an empty list says "no detections", null
  // (no answer) leaves the table empty.
  function fillTable(detections) {
    const body = $("detections").querySelector("tbody");
    body.replaceChildren();
    if (detections && detections.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.className = "empty";
      td.textContent = "no detections";
      tr.append(td);
      body.append(tr);
      return;
    }
    (detections || []).forEach((d, i) => {
      const tr = document.createElement("tr");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colorFor(d.label);
      const cells = [String(i + 1), d.label, d.score.toFixed(3),
        "[" + d.box.map((v) => v.toFixed(1)).join(", ") + "]",
        (d.runners_up || []).map((r) => r.label + " " + r.score.toFixed(2)).join(", ")];
      cells.forEach((c, j) => {
        const td = document.createElement("td");
        if (j === 1) td.append(sw);
        td.append(c);
        tr.append(td);
      });
      body.append(tr);
    });
  }

  // readAnswer reads a response's body: JSON (the answer or a problem) or,
  // from something in between such as a proxy, text.
  async function readAnswer(resp) {
    const type = resp.headers.get("Content-Type") || "";
    if (/json/.test(type)) {
      try { return await resp.json(); } catch (e) { return null; }
    }
    await resp.text().catch(() => "");
    return null;
  }

  // problemMessage is what to show for an error answer: the problem's detail
  // (written for the client), else its title, else the status.
  function problemMessage(resp, body) {
    const what = (body && (body.detail || body.title)) || resp.statusText || "error";
    let msg = "HTTP " + resp.status + ": " + what;
    const retry = resp.headers.get("Retry-After");
    if (retry) msg += " (retry in " + retry + " s)";
    return msg;
  }

  // formBody is the multipart request: the picture and the text fields.
  function formBody() {
    const form = new FormData();
    form.append("image", state.file, "image");
    // Blank: no categories field, so the server uses the model's own
    // vocabulary (an empty categories field is answered 422).
    if ($("categories").value.replace(/[\s,]/g, "") !== "") form.append("categories", $("categories").value);
    form.append("score_threshold", $("threshold").value);
    if ($("masks").checked) form.append("masks", "rle");
    return form;
  }

  // jsonBody is the JSON request with the examples as exemplars, grouped by
  // label. Without categories, the examples' labels are the vocabulary.
  async function jsonBody() {
    const req = { image: await pictureBase64(), score_threshold: Number($("threshold").value) };
    const names = $("categories").value.split(",").map((c) => c.trim()).filter((c) => c !== "");
    if (names.length) req.categories = names;
    if ($("masks").checked) req.masks = "rle";
    const byLabel = new Map();
    for (const e of state.examples) {
      if (!byLabel.has(e.label)) byLabel.set(e.label, []);
      byLabel.get(e.label).push({ image: e.image, box: e.box.map((v) => Math.round(v * 10) / 10) });
    }
    req.exemplars = Array.from(byLabel, ([label, exemplars]) => ({ label, exemplars }));
    return JSON.stringify(req);
  }

  // pictureBase64 is the current picture's file in base64, read once (a
  // failed read is tried again next time).
  function pictureBase64() {
    if (!state.b64) {
      const file = state.file;
      const p = new Promise((resolve, reject) => {
        const r = new FileReader();
        r.onload = () => resolve(String(r.result).slice(String(r.result).indexOf(",") + 1));
        r.onerror = () => reject(r.error || new Error("read failed"));
        r.readAsDataURL(file);
      });
      p.catch(() => { if (state.b64 === p) state.b64 = null; });
      state.b64 = p;
    }
    return state.b64;
  }

  // ---- categories by example: drag a box on the picture ----
  // The server's limits (docs/api.md "Limits"): checked here so that an
  // example the server would refuse is not kept.
  const MAX_EXAMPLE_IMAGE_BYTES = 4 << 20, MAX_EXAMPLES_PER_LABEL = 8, MAX_EXAMPLES = 32;

  function setDrawing(on) {
    $("example-draw").setAttribute("aria-pressed", String(on));
    canvas.classList.toggle("drawing", on);
    if (!on) state.drawing = null;
  }

  // startDrawing turns drawing on, or says why it cannot.
  function startDrawing() {
    const label = $("example-label").value.trim();
    let why = "";
    if (label === "") why = "Type the example's label first.";
    else if (state.file.size > MAX_EXAMPLE_IMAGE_BYTES) why = "Examples can be drawn on pictures of up to 4 MiB; this one is " + (state.file.size / 1048576).toFixed(1) + " MiB.";
    else if (state.examples.length >= MAX_EXAMPLES) why = "At most " + MAX_EXAMPLES + " examples in all: remove one first.";
    else if (state.examples.filter((e) => e.label === label).length >= MAX_EXAMPLES_PER_LABEL) why = "At most " + MAX_EXAMPLES_PER_LABEL + " examples of one label.";
    if (why) {
      showError(why);
      if (label === "") $("example-label").focus();
      return;
    }
    showError("");
    setDrawing(true);
  }

  // canvasPoint is an event's position in canvas pixels (inside the border).
  function canvasPoint(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left - canvas.clientLeft) * canvas.width / canvas.clientWidth,
      (e.clientY - r.top - canvas.clientTop) * canvas.height / canvas.clientHeight];
  }

  // addExample keeps a box drawn on the picture imageId (canvas pixels) as an
  // example of label, then detects with it.
  async function addExample(label, imageId, canvasBox) {
    const s = drawScale(), w = state.img.naturalWidth, h = state.img.naturalHeight;
    const clamp = (v, hi) => Math.min(hi, Math.max(0, v));
    const box = [clamp(canvasBox[0] / s, w), clamp(canvasBox[1] / s, h), clamp(canvasBox[2] / s, w), clamp(canvasBox[3] / s, h)];
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) {
      showError("The example's box is too small: drag a box at least 2 pixels on each side.");
      draw(state.detections);
      return;
    }
    let image;
    try {
      image = await pictureBase64();
    } catch (e) {
      fail("The picture could not be read (" + e.message + ").");
      return;
    }
    if (imageId !== state.imageId) return; // the picture changed meanwhile
    state.examples.push({ label, box, image, imageId });
    showExamples();
    detect();
  }

  function showExamples() {
    const list = $("examples");
    list.replaceChildren();
    state.examples.forEach((e, i) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colorFor(e.label);
      const where = "[" + e.box.map((v) => v.toFixed(0)).join(", ") + "]";
      const text = document.createElement("span");
      text.textContent = e.label + " " + where + (e.imageId === state.imageId ? "" : " (another picture)");
      const rm = document.createElement("button");
      rm.type = "button";
      rm.textContent = "✕";
      rm.title = "remove this example";
      rm.setAttribute("aria-label", "remove the example of " + e.label + " at " + where);
      rm.addEventListener("click", () => {
        state.examples.splice(i, 1);
        showExamples();
        $("example-label").focus();
        draw(state.detections);
        detect();
      });
      li.append(sw, text, rm);
      list.append(li);
    });
  }

  $("example-draw").addEventListener("click", () => {
    if ($("example-draw").getAttribute("aria-pressed") === "true") setDrawing(false);
    else startDrawing();
    draw(state.detections);
  });
  $("example-label").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    if (!state.img) showError("Load a picture first, then draw a box around an example in it.");
    else if ($("example-draw").getAttribute("aria-pressed") !== "true") startDrawing();
  });
  canvas.addEventListener("pointerdown", (e) => {
    if (!canvas.classList.contains("drawing") || !state.img || !e.isPrimary || e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    // The label and the picture are those of the moment the drag starts.
    state.drawing = { from: canvasPoint(e), to: null, label: $("example-label").value.trim(), imageId: state.imageId };
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!state.drawing) return;
    state.drawing.to = canvasPoint(e);
    draw(state.detections);
  });
  canvas.addEventListener("pointerup", (e) => {
    const d = state.drawing;
    if (!d) return;
    setDrawing(false);
    if (d.imageId !== state.imageId || d.label === "") {
      draw(state.detections);
      return;
    }
    addExample(d.label, d.imageId, rect(d.from, canvasPoint(e)));
  });
  canvas.addEventListener("pointercancel", () => {
    if (!state.drawing) return;
    setDrawing(false);
    draw(state.detections);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && canvas.classList.contains("drawing")) {
      setDrawing(false);
      draw(state.detections);
    }
  });

  async function detect() {
    if (!state.file) return;
    const seq = ++state.seq;
    showError("");
    $("status").textContent = "Detecting…";
    let body;
    try {
      body = state.examples.length ? await jsonBody() : formBody();
    } catch (e) {
      if (seq === state.seq) fail("The picture could not be read (" + e.message + ").");
      return;
    }
    if (seq !== state.seq) return;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ANSWER_TIMEOUT_MS);
    let resp, answer;
    try {
      const headers = { Accept: "application/json" };
      if (typeof body === "string") headers["Content-Type"] = "application/json";
      const key = apiKey();
      if (key) headers.Authorization = "Bearer " + key;
      resp = await fetch("/v1/detect", { method: "POST", body, headers, signal: abort.signal });
      answer = await readAnswer(resp);
    } catch (e) {
      if (seq === state.seq) {
        fail(abort.signal.aborted
          ? "The server did not answer within " + ANSWER_TIMEOUT_MS / 1000 + " s."
          : "The server could not be reached (" + e.message + ").");
      }
      return;
    } finally {
      clearTimeout(timer);
    }
    if (seq !== state.seq) return; // a newer request is on its way
    window.vild.lastResponse = answer;
    if (!resp.ok) {
      let msg = problemMessage(resp, answer);
      if (resp.status === 401) {
        askForKey();
        msg += apiKey() ? " Check the API key." : " Enter an API key.";
      } else if (state.examples.length && answer && /exemplar/.test(answer.type || "")) {
        msg += " Remove the example (✕) to detect without it.";
      }
      fail(msg);
      return;
    }
    if (!answer || !Array.isArray(answer.detections)) {
      fail("The server's answer could not be read (HTTP " + resp.status + ").");
      return;
    }
    try {
      draw(answer.detections);
      fillTable(answer.detections);
    } catch (e) {
      fail("The server's answer could not be shown (" + e.message + ").");
      return;
    }
    const t = answer.timings_ms || {};
    const n = answer.detections.length;
    $("status").textContent = (n === 0 ? "No detections" : n + " detection(s)") + " in " + (t.total || 0).toFixed(0) + " ms · " + answer.model;
  }

  function later() { clearTimeout(state.timer); state.timer = setTimeout(detect, 250); }

  $("file").addEventListener("change", (e) => { if (e.target.files[0]) setImage(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) setImage(f);
  });
  $("threshold").addEventListener("input", (e) => { $("threshold-value").textContent = Number(e.target.value).toFixed(2); later(); });
  $("categories").addEventListener("keydown", (e) => { if (e.key === "Enter") detect(); });
  $("masks").addEventListener("change", detect);
  $("detect").addEventListener("click", detect);
  function useKey() {
    storeKey($("key").value.trim());
    detect();
  }
  $("key-use").addEventListener("click", useKey);
  $("key").addEventListener("keydown", (e) => { if (e.key === "Enter") useKey(); });
  if (storedKey()) { // a key given earlier in this tab: shown, to change or clear
    $("key").value = storedKey();
    $("key-box").hidden = false;
  }
  for (const b of document.querySelectorAll(".sample")) {
    b.addEventListener("click", async () => {
      showError("");
      $("categories").value = b.dataset.categories;
      try {
        const resp = await fetch(b.dataset.src);
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        setImage(await resp.blob());
      } catch (e) {
        fail("The sample could not be loaded (" + e.message + ").");
      }
    });
  }
})();
