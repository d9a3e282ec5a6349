// Browser test of vild's web page: Debian's Chromium, headless, driven by
// playwright-core (which never downloads a browser here). The server is
// colorserver: vild's real API and embedded page over the colour detector,
// whose answers are known exactly.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const chromiumPath = process.env.VILD_CHROMIUM || "/usr/bin/chromium";
const work = mkdtempSync(path.join(tmpdir(), "vild-e2e-"));
let base, browser, page;

const bin = path.join(work, "colorserver");
const servers = [];
const cspViolations = [];

// startServer runs colorserver with extra flags and returns its base URL.
async function startServer(...flags) {
  const proc = spawn(bin, ["--addr", "127.0.0.1:0", ...flags], { stdio: ["ignore", "pipe", "inherit"] });
  servers.push(proc);
  return new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (b) => {
      out += b;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error("colorserver exited " + code)));
  });
}

// startVild builds and runs the real server on the embedded default model
// (no --model), waits until it is ready and returns its base URL.
async function startVild() {
  const vild = path.join(work, "vild");
  execFileSync("go", ["build", "-o", vild, "./cmd/vild"], { cwd: root, stdio: "inherit" });
  const proc = spawn(vild, ["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "", "--data-dir", path.join(work, "data")],
    { stdio: ["ignore", "pipe", "inherit"] });
  servers.push(proc);
  const url = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (b) => {
      out += b;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error("vild serve exited " + code)));
  });
  for (let i = 0; i < 600; i++) { // the model loads and warms up: up to 60 s
    try {
      if ((await fetch(url + "/readyz")).status === 200) return url;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("vild serve not ready within 60 s");
}

before(async () => {
  execFileSync("go", ["build", "-o", bin, "./web/e2e/colorserver"], { cwd: root, stdio: "inherit" });
  base = await startServer();
  browser = await chromium.launchPersistentContext(path.join(work, "profile"), {
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(20000);
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
});

after(async () => {
  if (browser) await browser.close();
  for (const s of servers) s.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});

// pixelAt reads the canvas and the colour a CSS colour string renders as.
async function boxPixels() {
  return page.evaluate(() => {
    const c = document.getElementById("canvas");
    const ctx = c.getContext("2d");
    const probe = document.createElement("canvas").getContext("2d");
    return window.vild.drawnBoxes.map((b) => {
      probe.fillStyle = b.color;
      probe.fillRect(0, 0, 1, 1);
      const want = Array.from(probe.getImageData(0, 0, 1, 1).data.slice(0, 3));
      const x = Math.round(b.box[0] + b.lineWidth / 2), y = Math.round((b.box[1] + b.box[3]) / 2);
      const left = Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
      const cx = Math.round((b.box[0] + b.box[2]) / 2);
      const inside = Array.from(ctx.getImageData(cx, y, 1, 1).data.slice(0, 3));
      return { label: b.label, box: b.box, want, left, inside };
    });
  });
}

const close = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 3);

test("upload a scene, type categories, see the boxes drawn", async () => {
  const page0 = await page.goto(base + "/");
  const h = page0.headers();
  assert.match(h["content-security-policy"], /script-src 'self';.*frame-ancestors 'none'/);
  assert.doesNotMatch(h["content-security-policy"], /unsafe-inline/);
  assert.equal(h["x-content-type-options"], "nosniff");
  assert.equal(h["referrer-policy"], "no-referrer");
  assert.equal(await page.isVisible("#key-box"), false, "a server without keys needs no key field");
  await page.fill("#categories", "red square, blue circle, green");
  await page.setInputFiles("#file", path.join(root, "web/e2e/testdata/shapes.png"));
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2");
  const resp = await page.evaluate(() => window.vild.lastResponse);
  assert.deepEqual(resp.detections.map((d) => d.label).sort(), ["blue circle", "red square"]);
  assert.equal(resp.image.width, 320);
  const red = resp.detections.find((d) => d.label === "red square");
  [30, 40, 111, 121].forEach((v, i) => assert.ok(Math.abs(red.box[i] - v) <= 4, "red box " + red.box));

  for (const p of await boxPixels()) {
    assert.ok(close(p.left, p.want), `${p.label}: box edge ${p.left} is not the stroke colour ${p.want}`);
    assert.ok(!close(p.inside, p.want), `${p.label}: the box interior is painted over`);
  }
  const rows = await page.$$eval("#detections tbody tr", (trs) => trs.map((tr) => tr.children[1].textContent));
  assert.deepEqual(rows.sort(), ["blue circle", "red square"]);
  assert.match(await page.textContent("#status"), /2 detection\(s\)/);
});

// The page's samples on a real `vild serve` with the embedded default model:
// each sample is a held-out pictogram scene, and the model finds the objects
// web/static/samples/README.md lists, and nothing absent.
// realVild starts the real server once for the tests that need it.
let realStarted;
function realVild() {
  realStarted ??= startVild();
  return realStarted;
}

// dragOnCanvas drags the mouse over a box given in the picture's pixels.
async function dragOnCanvas(box) {
  const at = await page.evaluate(([x1, y1, x2, y2]) => {
    // The picture fills the canvas's content box (inside its border).
    const c = document.getElementById("canvas");
    const r = c.getBoundingClientRect();
    const sx = c.clientWidth / window.vild.lastResponse.image.width, sy = c.clientHeight / window.vild.lastResponse.image.height;
    const px = (x) => r.left + c.clientLeft + x * sx, py = (y) => r.top + c.clientTop + y * sy;
    return [px(x1), py(y1), px(x2), py(y2)];
  }, box);
  await page.mouse.move(at[0], at[1]);
  await page.mouse.down();
  await page.mouse.move((at[0] + at[2]) / 2, (at[1] + at[3]) / 2, { steps: 3 });
  await page.mouse.move(at[2], at[3], { steps: 3 });
  await page.mouse.up();
}

function iou(a, b) {
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const area = (r) => (r[2] - r[0]) * (r[3] - r[1]);
  return (w * h) / (area(a) + area(b) - w * h);
}

test("a sample scene on the embedded model is one click away", async () => {
  const real = await realVild();
  const want = {
    "samples/scene-000008.png": ["lady beetle", "pine decoration"],
    "samples/scene-000023.png": ["house", "ice cream", "straight ruler"],
    "samples/scene-000025.png": ["artist palette", "flat shoe", "tornado", "wrench"],
  };
  await page.goto(real + "/");
  for (const [src, labels] of Object.entries(want)) {
    await page.click(`button.sample[data-src="${src}"]`);
    await page.waitForFunction((n) => document.getElementById("canvas").dataset.boxes === String(n) &&
      window.vild.lastResponse && window.vild.lastResponse.image.width === 384, labels.length);
    const resp = await page.evaluate(() => window.vild.lastResponse);
    assert.deepEqual(resp.detections.map((d) => d.label).sort(), labels, src);
    assert.match(resp.model, /^pictogram-vild-small@/);
    for (const p of await boxPixels()) {
      assert.ok(close(p.left, p.want), `${src} ${p.label}: box edge ${p.left} is not the stroke colour ${p.want}`);
    }
    const rows = await page.$$eval("#detections tbody tr", (trs) => trs.map((tr) => tr.children[1].textContent));
    assert.deepEqual(rows.sort(), labels, src);
  }
  // The masks toggle: the same detections, each with an RLE mask of the
  // image's size, drawn; unchecked, none.
  const before = await page.evaluate(() => window.vild.lastResponse.detections.length);
  await page.check("#masks");
  await page.waitForFunction((n) => window.vild.drawnMasks === n && window.vild.lastResponse.detections.length === n &&
    window.vild.lastResponse.detections.every((d) => d.mask), before);
  const sizes = await page.evaluate(() => {
    const r = window.vild.lastResponse;
    return r.detections.map((d) => d.mask.size.join("x") === r.image.height + "x" + r.image.width);
  });
  assert.ok(sizes.length > 0 && sizes.every(Boolean), "mask sizes " + sizes);
  await page.uncheck("#masks");
  await page.waitForFunction(() => window.vild.drawnMasks === 0 && window.vild.lastResponse.detections.every((d) => !d.mask));
});

test("a category defined by a box drawn on the picture, on the embedded model", async () => {
  const real = await realVild();
  await page.goto(real + "/");
  await page.click('button.sample[data-src="samples/scene-000008.png"]');
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2" &&
    window.vild.lastResponse.image.width === 384);
  const named = await page.evaluate(() => window.vild.lastResponse.detections.find((d) => d.label === "lady beetle"));
  const beetle = named.box;

  // Drawing needs a label first.
  assert.equal(await page.getAttribute("#example-draw", "aria-pressed"), "false");
  await page.click("#example-draw");
  assert.match(await shownErrorText(), /label first/);
  assert.equal(await page.getAttribute("#example-draw", "aria-pressed"), "false");

  // "spotted bug" is no name the model knows: the drawn box defines it. With
  // the beetle's name gone from the categories, the example finds the beetle.
  await page.fill("#categories", "pine decoration");
  await page.fill("#example-label", "spotted bug");
  await page.click("#example-draw");
  assert.equal(await page.getAttribute("#example-draw", "aria-pressed"), "true");
  await dragOnCanvas(beetle);
  await page.waitForFunction(() => (window.vild.lastResponse.detections || []).some((d) => d.label === "spotted bug"));
  const resp = await page.evaluate(() => window.vild.lastResponse);
  assert.deepEqual(resp.detections.map((d) => d.label).sort(), ["pine decoration", "spotted bug"]);
  const bug = resp.detections.find((d) => d.label === "spotted bug");
  assert.ok(iou(bug.box, beetle) > 0.7, `spotted bug at ${bug.box}, the beetle at ${beetle}`);
  assert.ok(bug.score > named.score, `the example scores ${bug.score}, the name "lady beetle" ${named.score}`);
  assert.equal(await page.getAttribute("#example-draw", "aria-pressed"), "false");
  assert.equal(await page.evaluate(() => window.vild.drawnExamples), 1);
  const items = await page.$$eval("#examples li", (lis) => lis.map((li) => li.textContent));
  assert.equal(items.length, 1);
  assert.match(items[0], /^spotted bug \[/);
  const rows = await page.$$eval("#detections tbody tr", (trs) => trs.map((tr) => tr.children[1].textContent));
  assert.deepEqual(rows.sort(), ["pine decoration", "spotted bug"]);

  // Another picture keeps the example: the next request is JSON and carries
  // it with the picture it was drawn on.
  const detectRequest = () => page.waitForRequest((r) => r.url().endsWith("/v1/detect") && r.method() === "POST");
  const detectAnswer = () => page.waitForResponse((r) => r.url().endsWith("/v1/detect"));
  let sent = detectRequest(), answered = detectAnswer();
  await page.click('button.sample[data-src="samples/scene-000023.png"]');
  const req = await sent;
  assert.match(req.headers()["content-type"], /^application\/json/);
  const body = JSON.parse(req.postData());
  assert.deepEqual(body.exemplars.map((c) => [c.label, c.exemplars.length]), [["spotted bug", 1]]);
  assert.notEqual(body.exemplars[0].exemplars[0].image, body.image, "the example's picture is scene 8, not scene 23");
  const drawn = body.exemplars[0].exemplars[0].box;
  assert.ok(drawn.every((v, i) => Math.abs(v - beetle[i]) <= 0.6), `the example's box ${drawn}, the box dragged ${beetle}`);
  assert.equal((await answered).status(), 200);
  await page.waitForFunction(() => !document.getElementById("status").textContent.startsWith("Detecting"));
  assert.match(await page.textContent("#examples li"), /another picture/);
  assert.equal(await page.evaluate(() => window.vild.drawnExamples), 0);
  assert.equal(await page.isVisible("#error"), false);

  // Removed, the page asks as before (multipart): the sample's own labels only.
  sent = detectRequest(); answered = detectAnswer();
  await page.click("#examples li button");
  assert.match((await sent).headers()["content-type"], /^multipart\/form-data/);
  const after = await (await answered).json();
  assert.deepEqual(after.detections.map((d) => d.label).sort(), ["house", "ice cream", "straight ruler"]);
  assert.equal(await page.$$eval("#examples li", (l) => l.length), 0);
});

test("a model without an image encoder says so when a box is drawn", async () => {
  await detectWith("red square, blue circle", path.join(root, "web/e2e/testdata/shapes.png"));
  await page.fill("#example-label", "thing");
  await page.click("#example-draw");
  await dragOnCanvas([10, 10, 60, 60]);
  const msg = await shownErrorText();
  assert.match(msg, /HTTP 422: .*image encoder/);
  assert.match(msg, /Remove the example/);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");
  await page.click("#examples li button");
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2");
  // A click without a drag is no box.
  await page.click("#example-draw");
  await dragOnCanvas([20, 20, 20.5, 20.5]);
  assert.match(await shownErrorText(), /too small/);
  assert.equal(await page.$$eval("#examples li", (l) => l.length), 0);
});

async function shownErrorText() {
  await page.waitForSelector("#error:not([hidden])");
  return page.textContent("#error");
}

test("the threshold slider re-detects", async () => {
  await page.goto(base + "/");
  await page.fill("#categories", "red, orange, blue");
  await page.setInputFiles("#file", path.join(root, "web/e2e/testdata/shapes.png"));
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2");
  // red vs orange splits the red square's score (~0.89); 0.95 keeps only the blue circle.
  await page.$eval("#threshold", (el) => { el.value = "0.95"; el.dispatchEvent(new Event("input")); });
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "1");
  assert.equal(await page.textContent("#threshold-value"), "0.95");
  const labels = await page.evaluate(() => window.vild.lastResponse.detections.map((d) => d.label));
  assert.deepEqual(labels, ["blue"]);
});

test("errors are shown to the user", async () => {
  await page.goto(base + "/");
  await page.fill("#categories", "x".repeat(200));
  await page.setInputFiles("#file", path.join(root, "web/e2e/testdata/night.png"));
  await page.waitForSelector("#error:not([hidden])");
  assert.match(await page.textContent("#error"), /1 to 128 characters/);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");
});

// greenScenePNG is a white picture with one pure green square, drawn by the
// browser: red and blue each score exactly 0.5 on it.
async function greenScenePNG() {
  const url = await page.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 160; c.height = 120;
    const g = c.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, 160, 120);
    g.fillStyle = "#00ff00"; g.fillRect(40, 30, 60, 60);
    return c.toDataURL("image/png");
  });
  return Buffer.from(url.slice(url.indexOf(",") + 1), "base64");
}

// bmp is a 2×2 24-bit BMP: the browser shows it, the server does not take it.
function bmp() {
  const b = Buffer.alloc(54 + 16);
  b.write("BM", 0);
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(2, 18);
  b.writeInt32LE(2, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  b.writeUInt32LE(16, 34);
  b.fill(0xff, 54); // white pixels, rows padded to 8 bytes
  return b;
}

// detectWith loads the page, sets the categories (and threshold), gives it a
// file and waits until the page has settled: an answer shown or an error.
async function detectWith(categories, file, threshold) {
  await page.goto(base + "/");
  await page.fill("#categories", categories);
  if (threshold !== undefined) {
    await page.$eval("#threshold", (el, v) => { el.value = v; el.dispatchEvent(new Event("input")); }, String(threshold));
  }
  await page.setInputFiles("#file", file);
  await page.waitForFunction(() => {
    const s = document.getElementById("status").textContent;
    return !document.getElementById("error").hidden || (s !== "" && !s.startsWith("Detecting"));
  });
}

async function shownError() {
  assert.equal(await page.isVisible("#error"), true, "no error is shown");
  assert.doesNotMatch(await page.textContent("#status"), /Detecting/);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");
  assert.equal(await page.$$eval("#detections tbody tr", (trs) => trs.length), 0);
  return page.textContent("#error");
}

test("a scene with no match shows no detections", async () => {
  await detectWith("red, blue", { name: "green.png", mimeType: "image/png", buffer: await greenScenePNG() }, 0.6);
  assert.equal(await page.isVisible("#error"), false);
  assert.match(await page.textContent("#status"), /^No detections in \d+ ms · colors@test$/);
  assert.deepEqual(await page.evaluate(() => window.vild.lastResponse.detections), []);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");
  const rows = await page.$$eval("#detections tbody tr", (trs) => trs.map((tr) => tr.textContent));
  assert.deepEqual(rows, ["no detections"]);
  // The next answer with boxes replaces the empty state.
  await page.$eval("#threshold", (el) => { el.value = "0.3"; el.dispatchEvent(new Event("input")); });
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "1");
  assert.equal(await page.$$eval("#detections tbody tr td.empty", (tds) => tds.length), 0);
});

test("an unsupported file shows an error", async () => {
  // Not an image at all: the browser cannot show it, nothing is sent.
  let posted = 0;
  const count = (r) => { if (r.url().endsWith("/v1/detect")) posted++; };
  page.on("request", count);
  await detectWith("red", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a picture") });
  page.off("request", count);
  assert.match(await shownError(), /not an image the browser can show/);
  assert.equal(posted, 0);
  assert.equal(await page.isDisabled("#detect"), true);
  // An image the browser shows but the server does not take: its problem detail.
  await detectWith("red", { name: "white.bmp", mimeType: "image/bmp", buffer: bmp() });
  assert.match(await shownError(), /^HTTP 415: unsupported image format: send JPEG, PNG, GIF or WebP$/);
});

test("server errors are shown, not waited on", async () => {
  const shapes = path.join(root, "web/e2e/testdata/shapes.png");
  await detectWith("red, fail-internal", shapes);
  assert.match(await shownError(), /^HTTP 500: internal error$/);
  await detectWith("red, fail-busy", shapes);
  assert.match(await shownError(), /^HTTP 503: the server is busy.*\(retry in \d+ s\)$/);
  // A proxy's HTML error page and a network failure.
  await page.route("**/v1/detect", (r) => r.fulfill({ status: 502, contentType: "text/html", body: "<html><body>Bad gateway</body></html>" }));
  await detectWith("red", shapes);
  assert.match(await shownError(), /^HTTP 502: Bad Gateway$/);
  await page.unroute("**/v1/detect");
  await page.route("**/v1/detect", (r) => r.abort("connectionrefused"));
  await detectWith("red", shapes);
  assert.match(await shownError(), /could not be reached/);
  await page.unroute("**/v1/detect");
  // And the page recovers: the same scene detects again.
  await detectWith("red square, blue circle", shapes);
  assert.equal(await page.isVisible("#error"), false);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "2");
});

test("Swagger UI is served at /docs from embedded assets", async () => {
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) external.push(r.url()); });
  await page.goto(base + "/docs");
  await page.waitForSelector("text=vild API");
  await page.waitForSelector('[data-path="/v1/detect"]');
  assert.deepEqual(external, []);
});

test("a server that needs keys: the page asks for one, a bad key is an error, a good key detects", async () => {
  const token = "vild_" + randomBytes(32).toString("base64url");
  const keyed = await startServer("--key", token);
  const shapes = path.join(root, "web/e2e/testdata/shapes.png");
  const sent = [];
  const watch = (r) => { if (r.url().endsWith("/v1/detect")) sent.push(r.headers()["authorization"] || ""); };
  page.on("request", watch);
  try {
    await page.goto(keyed + "/");
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(keyed + "/");
    assert.equal(await page.isVisible("#key-box"), false);
    await page.fill("#categories", "red square, blue circle");
    await page.setInputFiles("#file", shapes);
    await page.waitForSelector("#error:not([hidden])");
    assert.match(await page.textContent("#error"), /^HTTP 401: an API key is required.*Enter an API key\.$/);
    assert.equal(await page.isVisible("#key-box"), true, "the page does not ask for a key");
    assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");

    // A bad key: the server's error is shown, the field stays.
    await page.fill("#key", "vild_" + randomBytes(32).toString("base64url"));
    await page.press("#key", "Enter");
    await page.waitForFunction(() => /not valid/.test(document.getElementById("error").textContent));
    assert.match(await page.textContent("#error"), /^HTTP 401: the API key is not valid \(unknown, revoked or malformed\) Check the API key\.$/);
    assert.equal(await page.isVisible("#key-box"), true);

    // The good key: detections, and the key is sent as a Bearer token.
    await page.fill("#key", token);
    await page.click("#key-use");
    await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2");
    assert.equal(await page.isVisible("#error"), false);
    assert.equal(sent[sent.length - 1], "Bearer " + token);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("vild-api-key")), token);

    // A reload in the same tab keeps it: no question asked.
    await page.goto(keyed + "/");
    await page.setInputFiles("#file", shapes);
    await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "2");
    assert.equal(await page.isVisible("#error"), false);
  } finally {
    page.off("request", watch);
    await page.evaluate(() => sessionStorage.clear());
  }
});

test("the page breaks no Content-Security-Policy rule", () => {
  assert.deepEqual(cspViolations, []);
});
