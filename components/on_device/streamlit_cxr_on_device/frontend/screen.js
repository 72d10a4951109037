// The on-device screening component: the file input, the runtimes, the model files in Cache Storage,
// the self-test, and the batch loop. Only numbers and words are handed to Python (setStateValue):
// never a file's bytes, never its pixels, except the files this browser cannot screen, and only once
// the user presses the button that uploads them (setTriggerValue: sent once, never again on a rerun).
import { loadJpeg } from "./jpeg.js";
import { startOpenCv } from "./opencv.js";
import * as P from "./pipeline.js";
import { pictures, runtime } from "./store.js";

const ORT_URL = new URL("./vendor/onnxruntime-web/ort.wasm.bundle.min.mjs", import.meta.url).href;
// The large libraries, by their path under vendor/ (Python sends their pinned sha256).
const ORT_WASM = "onnxruntime-web/ort-wasm-simd-threaded.wasm";
const OPENCV_GLUE = "opencv-js/opencv-glue.js";
const OPENCV_WASM = "opencv-js/opencv.wasm";
const LIBJPEG = "libjpeg-turbo/jpeg.wasm";
const PROBE_URL = new URL("./probe.json", import.meta.url).href;
const CACHE_NAME = "cxr-on-device-v1";
// The smallest module using a SIMD instruction (v128.const, i8x16.popcnt): validates only where SIMD runs.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0,
  65, 0, 253, 15, 253, 98, 11]);
// The self-test's tolerances: the same library on another CPU gives float32 sums in another order.
const PROBE_TOLERANCE = { raw: 1e-4, measures: 1e-6 };
// Far longer than any start measured (6 s on a 2-core machine, its server just started), and than 28 MB of
// libraries take on a 1 Mbit/s link: past it, the page says why instead of "Checking…" for ever.
const START_LIMIT_S = 300;

// One state per page load: the libraries and sessions outlive Streamlit's reruns.
// `handed`: the last batch's files handed to the server, {batch, files: [{index, file}]}, kept only until
// Python has screened them, the user chooses a new batch or leaves the page; `sentAtRun`: the run of Python
// an upload of them was sent in. `generation`: the start under way (a later one supersedes it);
// `running`: the batch being screened (its sessions are released only after it).
const state = { phase: "starting", data: null, setStateValue: null, setTriggerValue: null, chain: Promise.resolve(),
  context: null, requested: "", report: null, ui: null, batch: 0, handed: null, sentAtRun: null, generation: 0,
  running: Promise.resolve() };

function browserReason() {
  if (typeof WebAssembly !== "object" || typeof WebAssembly.validate !== "function") {
    return "this browser has no WebAssembly";
  }
  if (!WebAssembly.validate(SIMD_PROBE)) return "this browser's WebAssembly has no SIMD";
  if (!window.isSecureContext || !window.crypto?.subtle || !window.caches) {
    return "the page is not served over HTTPS or from this computer, so the browser cannot check or keep the model";
  }
  if (typeof OffscreenCanvas !== "function" || typeof createImageBitmap !== "function") {
    return "this browser cannot decode images off screen";
  }
  return null;
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function cacheKey(sha256) {
  // Cache Storage keys are URLs; nothing is ever fetched from this one.
  return new Request(new URL(`/cxr-on-device/sha256/${sha256}`, window.location.origin).href);
}

// A file by its hash: from Cache Storage, else from `fetchBytes` (null: not to be had yet), checked
// either way and kept. `what` names the file in the error a wrong hash gives.
async function keptBytes(sha256, fetchBytes, what) {
  const cache = await caches.open(CACHE_NAME);
  const hit = await cache.match(cacheKey(sha256));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if ((await sha256Hex(bytes)) === sha256) return { bytes, from: "cache" };
    await cache.delete(cacheKey(sha256)); // damaged: fetched again below
  }
  const bytes = await fetchBytes();
  if (!bytes) return null;
  const digest = await sha256Hex(bytes);
  if (digest !== sha256) throw new Error(`the ${what} received has sha256 ${digest}, not the ${sha256} pinned for it`);
  try {
    await cache.put(cacheKey(sha256), new Response(bytes));
  } catch {
    // Kept for later visits where the browser lets it (quota, private windows): this visit has the bytes.
  }
  return { bytes, from: "server" };
}

// A model file: its bytes come from Python, base64 in the component's data, only when asked for.
function assetBytes(asset, payload) {
  const encoded = payload?.[asset.sha256];
  return keptBytes(asset.sha256, async () => (encoded ? fromBase64(encoded) : null), asset.role);
}

// A vendored library, kept like the model files: Streamlit serves its assets with no validator or
// lifetime, so the HTTP cache would fetch (and the server compress) 28 MB again on every visit.
async function libraryBytes(path) {
  const url = new URL(`./vendor/${path}`, import.meta.url).href;
  const got = await keptBytes(state.data.libraries[path], async () => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${path} did not load (HTTP ${response.status})`);
    return new Uint8Array(await response.arrayBuffer());
  }, path);
  return got.bytes;
}

// onnxruntime-web with its wasm given as bytes (one thread: Streamlit sends no COOP/COEP headers, so
// no SharedArrayBuffer), started once per page load, on the page's thread. Its own worker (proxy) helped
// while OpenCV.js took 0.8 s to start here; with OpenCV.js's wasm compiled from bytes (0.2 s), the worker's
// own load of the bundle and the wasm's copy cost more: a second visit was ready 50 ms later with it
// (median of 6 visits each, alternated on one server).
function loadOrt() {
  runtime.ort ??= Promise.all([import(ORT_URL), libraryBytes(ORT_WASM)]).then(([ort, wasm]) => {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmBinary = wasm;
    return ort;
  }).catch((error) => { runtime.ort = null; throw error; }); // a later visit tries again
  return runtime.ort;
}

// libjpeg-turbo, for JPEGs decoded as the server's Pillow decodes them (jpeg.js).
function loadLibjpeg() {
  runtime.libjpeg ??= libraryBytes(LIBJPEG).then(loadJpeg).catch((error) => { runtime.libjpeg = null; throw error; });
  return runtime.libjpeg;
}

function loadOpenCv() {
  runtime.opencv ??= startOpenCv(libraryBytes(OPENCV_GLUE).then(openCvFactory), libraryBytes(OPENCV_WASM))
    .then((cv) => { runtime.cv = cv; return cv; }) // picture.js draws with it
    .catch((error) => { runtime.opencv = null; throw error; });
  return runtime.opencv;
}

// The glue script, run from its checked bytes, leaves Emscripten's factory as window.cv.
function openCvFactory(bytes) {
  const src = URL.createObjectURL(new Blob([bytes], { type: "text/javascript;charset=utf-8" }));
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.onerror = () => reject(new Error("OpenCV.js did not load"));
    script.onload = () => {
      URL.revokeObjectURL(src);
      if (typeof window.cv === "function") resolve(window.cv);
      else reject(new Error("OpenCV.js did not start"));
    };
    document.head.appendChild(script);
  });
}

async function session(ort, bytes) {
  const created = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  created.ort = ort;
  return created;
}

function report(update) {
  state.report = { ...state.report, ...update };
  state.setStateValue("status", state.report);
  render();
}

function fail(reason) {
  state.phase = "off";
  report({ phase: "off", ok: false, reason });
}

function close(a, b, tolerance) { return Math.abs(a - b) <= tolerance * Math.max(1, Math.abs(b)); }

async function selfTest(context, probeReady) {
  const probe = await probeReady; // made for these files (checked in start)
  const bytes = fromBase64(probe.png_base64);
  const decoded = await P.decodePixels(bytes, "L");
  const got = await P.probe(decoded, context);
  const want = probe.expected;
  const frameSame = got.frame.every((v, i) => v === want.frame[i]);
  const rawsClose = got.raws.every((v, i) => Math.abs(v - want.raws[i]) <= PROBE_TOLERANCE.raw);
  const ok = frameSame && rawsClose && Math.abs(got.raw - want.raw) <= PROBE_TOLERANCE.raw
    && close(got.layout_residual, want.layout_residual, PROBE_TOLERANCE.measures)
    && close(got.profile_distance, want.profile_distance, PROBE_TOLERANCE.measures);
  return {
    ok, got, want,
    reason: ok ? "" : `the self-test gave another answer (probability ${got.raw.toFixed(6)}, expected ${want.raw.toFixed(6)})`,
  };
}

// Everything before the first file: libraries, model files, sessions, self-test. Runs again only
// when Python names other files or another recipe (another model; a site's thresholds change nothing here).
async function advance() {
  const data = state.data;
  const wanted = JSON.stringify([data.assets.map((a) => a.sha256), data.recipe]);
  if ((state.phase === "ready" || state.phase === "off") && state.loaded === wanted) return;
  if (state.phase === "ready" || state.phase === "off") { // another model: nothing is screened until it passes
    state.phase = "starting";
    render();
  }
  const generation = ++state.generation;
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`it did not start within ${START_LIMIT_S} s`)), START_LIMIT_S * 1000);
  });
  try {
    await Promise.race([start(data, wanted, generation), limit]);
  } catch (error) {
    state.generation += 1; // a start still running after the limit is superseded: it changes nothing
    state.loaded = wanted;
    fail(`it could not start here (${error?.message || error})`);
  } finally {
    clearTimeout(timer);
  }
}

async function start(data, wanted, generation) {
  const reason = browserReason();
  if (reason) { state.loaded = wanted; return fail(reason); }
  const started = performance.now();
  const parts = {}; // when each piece was ready, for the benchmark
  const timed = (name, promise) => promise.then((value) => { parts[name] = performance.now() - started; return value; });
  // Everything at once: the libraries, the model files and the probe do not wait on each other.
  const ortReady = timed("ort_ms", loadOrt());
  const cvReady = timed("opencv_ms", loadOpenCv());
  const libjpegReady = timed("libjpeg_ms", loadLibjpeg());
  const probeReady = fetch(PROBE_URL).then((response) => response.json());
  const assetsReady = timed("assets_ms", Promise.all(data.assets.map((asset) => assetBytes(asset, data.payload))));
  // A probe made for other files (another model chosen) fails the self-test: known before any download.
  const probe = await probeReady;
  for (const asset of data.assets) {
    if (probe.sha256[asset.role] !== asset.sha256) {
      assetsReady.catch(() => undefined); // not waited for
      state.loaded = wanted;
      return fail(`the self-test was made for another ${asset.role} file`);
    }
  }
  const got = await assetsReady;
  if (generation !== state.generation) return; // superseded: its limit passed
  const files = {}, missing = [];
  let fromServer = 0;
  data.assets.forEach((asset, i) => {
    if (!got[i]) { missing.push(asset.sha256); return; }
    files[asset.role] = got[i].bytes;
    if (got[i].from === "server") fromServer += got[i].bytes.length;
  });
  if (missing.length) {
    if (state.requested !== missing.join(",")) {
      state.requested = missing.join(",");
      state.phase = "fetching";
      report({ phase: "need", ok: false, missing, reason: "" });
    }
    return; // Python's next run sends them
  }
  const model = data.assets.find((a) => a.role === "model");
  const ort = await ortReady;
  const [modelSession, localiserSession] = await timed("sessions_ms", Promise.all([
    session(ort, files.model), files.localiser ? session(ort, files.localiser) : null]));
  const context = {
    cv: new P.Cv((await Promise.all([cvReady, libjpegReady]))[0]), constants: data.constants,
    spec: data.recipe.spec, zooms: data.recipe.zooms, recipe: data.recipe,
    detector: JSON.parse(new TextDecoder().decode(files.detector)),
    model: modelSession,
    localiser: localiserSession,
    modelSha: model.sha256,
    localiserSha: data.assets.find((a) => a.role === "localiser")?.sha256 || null,
    detectorSha: data.assets.find((a) => a.role === "detector").sha256,
  };
  const loadedAt = performance.now();
  const test = await selfTest(context, probeReady);
  if (generation !== state.generation) return release(context); // superseded: its sessions go
  state.loaded = wanted;
  state.requested = "";
  const previous = state.context;
  if (!test.ok) {
    state.context = null;
    await release(context);
    await release(previous);
    return fail(test.reason);
  }
  state.context = context;
  await release(previous); // another model's sessions: their memory, in onnxruntime's wasm heap, is freed
  state.phase = "ready";
  report({
    phase: "ready", ok: true, reason: "", missing: [], model_sha256: model.sha256,
    selftest: { raw: test.got.raw, expected: test.want.raw },
    // started: since the page was opened (performance.now() counts from the navigation), Streamlit's own part.
    timings_ms: { started, load: loadedAt - started, selftest: performance.now() - loadedAt, ...parts },
    downloaded_bytes: fromServer, ort: ort.env.versions?.web || "",
  });
  prune([...Object.values(data.libraries), ...data.assets.map((asset) => asset.sha256)]);
}

// Once ready: Cache Storage entries under hashes this start did not use (a library since upgraded,
// another model's files, fetched again if it is chosen) are removed, so that a browser keeps only what
// screening uses, not every version it was ever sent.
async function prune(used) {
  try {
    const cache = await caches.open(CACHE_NAME);
    const kept = new Set(used.map((sha256) => cacheKey(sha256).url));
    await Promise.all((await cache.keys()).filter((key) => !kept.has(key.url)).map((key) => cache.delete(key)));
  } catch {
    // Storage the browser refuses (a private window): nothing was kept there either.
  }
}

// Another model's sessions, once the batch that may be using them is done: their memory freed.
async function release(context) {
  await state.running.catch(() => undefined);
  if (!context || context === state.context) return;
  await Promise.all([context.model?.release(), context.localiser?.release()].map((done) => done?.catch(() => undefined)));
}

function plural(count, one, many) { return count === 1 ? one : many.replace("N", count); }

async function screenFiles(files) {
  const context = state.context;
  const batch = ++state.batch;
  const rows = [], handed = [];
  state.handed = null;
  state.sentAtRun = null;
  for (const [index, file] of files.entries()) {
    state.progress = `Screening ${index + 1} of ${files.length} on this device…`;
    render();
    let result, imageSha = "";
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      imageSha = await sha256Hex(bytes); // the file's own hash, as the server's rows carry it
      result = await P.screen(bytes, context);
    } catch (error) {
      result = { status: "error", code: "browser_failure", detail: String(error?.message || error), timings_ms: {} };
    }
    const { local, ...numbers } = result; // the pixels and maps stay here
    const id = `${batch}/${index}`;
    if (local) pictures.set(id, local);
    if (result.status === "server") handed.push({ index, file });
    rows.push({ file: file.name, id, model_sha256: context.modelSha, image_sha256: imageSha, recipe: context.recipe,
      ...numbers });
  }
  state.handed = handed.length ? { batch, files: handed } : null;
  // Only the last batch is shown: an earlier one's X-rays and maps are let go, now that this one replaces it.
  for (const id of [...pictures.keys()]) if (!id.startsWith(`${batch}/`)) pictures.delete(id);
  const screened = files.length - handed.length;
  state.progress = `${handed.length ? `${screened} of ` : ""}${plural(files.length, "1 file", "N files")} screened `
    + "on this device: nothing was uploaded.";
  render();
  state.setStateValue("results", { batch, rows });
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1)); // past "data:…;base64,"
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// The handed files Python still names as waiting (it screens what an upload brings in that very run).
function waiting() {
  const note = state.data?.handed, handed = state.handed;
  if (!handed || note?.batch !== handed.batch) return [];
  return handed.files.filter(({ index }) => (note.waiting || []).includes(index));
}

// On the user's click only: the waiting files' bytes, as many as one websocket message may carry. They are
// kept until a later run of Python no longer names them (one that never took them offers them again).
async function uploadHanded() {
  const { batch } = state.handed;
  const files = waiting();
  const limit = state.data.upload_limit;
  let size = 0, count = 0;
  for (const { file } of files) {
    const encoded = 4 * Math.ceil(file.size / 3);
    if (size + encoded > limit) break;
    size += encoded;
    count += 1;
  }
  if (!count) {
    state.progress = `${files[0]?.file.name} is too large to send from here: choose “Upload to the server” above.`;
    return render();
  }
  const chosen = files.slice(0, count);
  state.sentAtRun = state.data.handed.run;
  state.progress = `Sending ${plural(count, "1 file", "N files")} to the server to be screened there…`;
  render();
  const sent = await Promise.all(chosen.map(async ({ index, file }) => ({ index, name: file.name, data: await base64Of(file) })));
  state.setTriggerValue("upload", { batch, files: sent });
  state.progress = `${plural(count, "1 file", "N files")} sent to the server at your request; nothing else was uploaded.`;
  render();
}

function render() {
  const ui = state.ui;
  if (!ui) return;
  const phase = state.phase;
  ui.input.disabled = phase !== "ready";
  ui.status.textContent = {
    starting: "Checking this browser for on-device screening…",
    fetching: "Downloading the model once; it is kept in this browser for later visits…",
    ready: state.progress || "Ready: X-rays chosen here are screened in this browser and never uploaded.",
    off: `On-device screening is off: ${state.report?.reason || ""}`,
  }[phase] || "";
  ui.status.dataset.phase = phase;
  // For tests and benchmarks: bytes of model files sent this visit, and how long starting took.
  ui.status.dataset.downloaded = String(state.report?.downloaded_bytes ?? 0);
  ui.status.dataset.loadMs = String(Math.round(state.report?.timings_ms?.load ?? 0));
  ui.status.dataset.selftestMs = String(Math.round(state.report?.timings_ms?.selftest ?? 0));
  ui.status.dataset.timings = JSON.stringify(state.report?.timings_ms ?? {});
  ui.root.hidden = !(state.data?.show_input); // off: the page says why, above
  // The files and why, in Python's words, once Python has the batch: then the button that uploads them.
  const note = state.data?.handed, offered = waiting();
  // Hidden while an upload is on its way: until a run after the one it was sent in says what it took.
  const sending = state.sentAtRun !== null && !(note?.run > state.sentAtRun);
  ui.handed.hidden = !(offered.length && note?.note) || sending;
  if (!ui.handed.hidden) {
    ui.note.textContent = note.note;
    ui.upload.textContent = plural(offered.length, "Upload this file to the server to screen it there",
      "Upload these N files to the server to screen them there");
  }
}

function build(parent) {
  const root = document.createElement("div");
  root.className = "on-device";
  root.innerHTML = `
    <label class="chooser">
      <span class="label">Chest X-rays to screen on this device (JPEG, PNG or DICOM; nothing is uploaded)</span>
      <input type="file" multiple accept=".jpg,.jpeg,.png,.dcm,.dicom,image/jpeg,image/png,application/dicom"
             data-testid="on-device-input">
    </label>
    <p class="status" data-testid="on-device-status" role="status"></p>
    <div class="handed" hidden>
      <p class="note" data-testid="on-device-handed-note"></p>
      <button type="button" data-testid="on-device-upload-handed"></button>
    </div>`;
  parent.appendChild(root);
  const input = root.querySelector("input");
  input.addEventListener("change", () => {
    const files = [...input.files];
    if (files.length && state.phase === "ready") {
      state.running = screenFiles(files).finally(() => { input.value = ""; });
    }
  });
  const upload = root.querySelector(".handed button");
  upload.addEventListener("click", () => {
    if (state.handed) uploadHanded().catch((error) => { state.progress = `Could not send the files: ${error?.message || error}`; render(); });
  });
  return { root, input, chooser: root.querySelector(".chooser"), status: root.querySelector(".status"),
    handed: root.querySelector(".handed"), note: root.querySelector(".handed .note"), upload };
}

export default function (component) {
  const { data, parentElement, setStateValue, setTriggerValue } = component;
  state.setStateValue = setStateValue;
  state.setTriggerValue = setTriggerValue;
  state.data = data;
  if (!state.ui || !parentElement.contains(state.ui.root)) {
    state.ui = build(parentElement);
    // A new mount (the page left and opened again) starts with no state in Python: say it again.
    if (state.report) setStateValue("status", state.report);
  }
  render();
  state.chain = state.chain.then(advance).catch((error) => fail(String(error?.message || error))).then(render);
  // Run when the component is unmounted (the page left): the files the user did not upload go. Streamlit
  // also runs it at once for a call whose data changed again before the call had begun (two runs of
  // Python in quick succession), the component still on the page: that is no leaving, so only an element
  // gone from the page, once Streamlit has done, lets them go.
  return () => setTimeout(() => { if (!parentElement.isConnected) state.handed = null; });
}
