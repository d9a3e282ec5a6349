// Browser test of vild's web page: Debian's Chromium, headless, driven by
// playwright-core (which never downloads a browser here). The server is
// colorserver: vild's real API and embedded page over the colour detector,
// whose answers are known exactly.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const chromiumPath = process.env.VILD_CHROMIUM || "/usr/bin/chromium";
const work = mkdtempSync(path.join(tmpdir(), "vild-e2e-"));
let server, base, browser, page;

before(async () => {
  const bin = path.join(work, "colorserver");
  execFileSync("go", ["build", "-o", bin, "./web/e2e/colorserver"], { cwd: root, stdio: "inherit" });
  server = spawn(bin, ["--addr", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
  base = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (b) => {
      out += b;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error("colorserver exited " + code)));
  });
  browser = await chromium.launchPersistentContext(path.join(work, "profile"), {
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(20000);
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
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
  await page.goto(base + "/");
  await page.fill("#categories", "red square, blue circle, green");
  await page.setInputFiles("#file", path.join(root, "web/static/samples/shapes.png"));
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

test("a sample scene is one click away", async () => {
  await page.goto(base + "/");
  await page.click('button.sample[data-src="samples/garden.png"]');
  await page.waitForFunction(() => document.getElementById("canvas").dataset.boxes === "3");
  const labels = await page.evaluate(() => window.vild.lastResponse.detections.map((d) => d.label).sort());
  assert.deepEqual(labels, ["green", "red", "yellow"]);
});

test("the threshold slider re-detects", async () => {
  await page.goto(base + "/");
  await page.fill("#categories", "red, orange, blue");
  await page.setInputFiles("#file", path.join(root, "web/static/samples/shapes.png"));
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
  await page.setInputFiles("#file", path.join(root, "web/static/samples/night.png"));
  await page.waitForSelector("#error:not([hidden])");
  assert.match(await page.textContent("#error"), /1 to 128 characters/);
  assert.equal(await page.evaluate(() => document.getElementById("canvas").dataset.boxes), "0");
});

test("Swagger UI is served at /docs from embedded assets", async () => {
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) external.push(r.url()); });
  await page.goto(base + "/docs");
  await page.waitForSelector("text=vild API");
  await page.waitForSelector('[data-path="/v1/detect"]');
  assert.deepEqual(external, []);
});
