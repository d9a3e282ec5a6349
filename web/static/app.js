// vild's page: one image, a category list and a threshold go to POST
// /v1/detect as multipart; the boxes come back and are drawn on a canvas.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const state = { file: null, img: null, timer: null, seq: 0 };
  // Exposed for the browser test and the curious: the last answer and the
  // boxes as drawn, in canvas pixels.
  window.vild = { lastResponse: null, drawnBoxes: [] };

  function colorFor(label) { // the same hue for the same label
    let h = 0;
    for (const c of label) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return "hsl(" + (h % 360) + ", 90%, 45%)";
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
  }

  function setImage(blob) {
    state.file = blob;
    const url = URL.createObjectURL(blob);
    const img = new Image();
    img.onload = () => { state.img = img; $("detect").disabled = false; draw([]); detect(); };
    img.onerror = () => { showError("This file is not an image the browser can show."); };
    img.src = url;
  }

  function draw(detections) {
    const img = state.img;
    if (!img) return;
    const scale = Math.min(1, 900 / img.naturalWidth);
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
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
  }

  function fillTable(detections) {
    const body = $("detections").querySelector("tbody");
    body.replaceChildren();
    detections.forEach((d, i) => {
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

  async function detect() {
    if (!state.file) return;
    const seq = ++state.seq;
    showError("");
    $("status").textContent = "Detecting…";
    const form = new FormData();
    form.append("image", state.file, "image");
    // Blank: no categories field, so the server uses the model's own
    // vocabulary (an empty categories field is answered 422).
    if ($("categories").value.replace(/[\s,]/g, "") !== "") form.append("categories", $("categories").value);
    form.append("score_threshold", $("threshold").value);
    let resp, body;
    try {
      resp = await fetch("/v1/detect", { method: "POST", body: form, headers: { Accept: "application/json" } });
      body = await resp.json();
    } catch (e) {
      if (seq === state.seq) { $("status").textContent = ""; showError("The server could not be reached: " + e.message); }
      return;
    }
    if (seq !== state.seq) return; // a newer request is on its way
    if (!resp.ok) {
      $("status").textContent = "";
      showError((body && (body.detail || body.title)) || ("HTTP " + resp.status));
      draw([]);
      fillTable([]);
      window.vild.lastResponse = body;
      return;
    }
    window.vild.lastResponse = body;
    draw(body.detections);
    fillTable(body.detections);
    const t = body.timings_ms || {};
    $("status").textContent = body.detections.length + " detection(s) in " + (t.total || 0).toFixed(0) + " ms · " + body.model;
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
  $("detect").addEventListener("click", detect);
  for (const b of document.querySelectorAll(".sample")) {
    b.addEventListener("click", async () => {
      showError("");
      $("categories").value = b.dataset.categories;
      const resp = await fetch(b.dataset.src);
      setImage(await resp.blob());
    });
  }
})();
