// A JPEG decoded as the server decodes it (core.serving.imaging._open_raster: Pillow's
// image.draft(mode, (side, side)) then load()), bit for bit: libjpeg-turbo 3.2.0, Pillow's own
// version, built to WebAssembly by components/on_device/jpeg_wasm/build.py. A browser's decoders
// decode at full size only, and a full decode then a shrink is not Pillow's scaled IDCT.
// EXIF orientation is the caller's: Pillow turns the picture after this decode.

// The libjpeg-turbo built into jpeg.wasm (jpeg_wasm/build.py): the server's Pillow must decode with the same.
export const LIBJPEG_TURBO = "3.2.0";

// decode.c's status codes, by number.
const CODES = ["decoded", "truncated", "corrupt", "unsupported", "no_memory", "bad_argument"];
const RESULT_FIELDS = 7; // struct result: status, libjpeg_code, width, height, channels, denominator, pixels

export class JpegError extends Error {
  constructor(code, libjpegCode = 0) {
    super(`JPEG not decoded: ${code}${libjpegCode ? ` (libjpeg message ${libjpegCode})` : ""}`);
    this.name = "JpegError";
    this.code = code; // "truncated", "corrupt", "unsupported", "no_memory", "bad_argument" or "failed"
    this.libjpegCode = libjpegCode; // libjpeg's J_MESSAGE_CODE (jerror.h) where libjpeg refused the data
  }
}

let compiled = null; // Promise of the WebAssembly.Module, compiled once
let instance = null; // Promise of the instance the next decode uses
let queue = Promise.resolve(); // one decode at a time: they share the instance's memory

// The module, from `source` (its bytes, a WebAssembly.Module or a URL) or by default from the vendor
// folder beside this file. Call it once before decodeJpeg; later calls return the same promise.
export function loadJpeg(source) {
  compiled ??= compile(source ?? new URL("./vendor/libjpeg-turbo/jpeg.wasm", import.meta.url));
  compiled.catch(() => { compiled = null; instance = null; }); // a later call tries again
  instance ??= compiled.then((module) => WebAssembly.instantiate(module, {}));
  return instance.then(() => undefined);
}

async function compile(source) {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  const url = new URL(source);
  if (url.protocol === "file:") { // node
    const { readFile } = await import("node:fs/promises");
    return WebAssembly.compile(await readFile(url));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} did not load (HTTP ${response.status})`);
  return WebAssembly.compile(await response.arrayBuffer());
}

// Pillow's draft((side, side)) scale: 1/8, 1/4 or 1/2 while both sides keep at least `side` pixels.
export function draftDenominator(width, height, side) {
  const ratio = Math.min(Math.floor(width / side), Math.floor(height / side));
  return [8, 4, 2].find((d) => ratio >= d) ?? 1;
}

// Pixels of `bytes` (the JPEG file: a Uint8Array or an ArrayBuffer) as Pillow's draft(mode, (side,
// side)) then load() gives them: rows of width * channels bytes. mode "L" gives a colour file's grey
// (libjpeg's conversion, as Pillow's draft("L") does); a grey file stays grey whatever the mode, as in
// Pillow. Without `side`, the full-size decode (Pillow's load() with no draft). Rejects with a JpegError.
export function decodeJpeg(bytes, { mode = "RGB", side } = {}) {
  const run = queue.then(() => decodeNow(bytes, mode, side));
  queue = run.catch(() => undefined);
  return run;
}

async function decodeNow(file, mode, side) {
  const bytes = file instanceof Uint8Array ? file : new Uint8Array(file);
  if (mode !== "L" && mode !== "RGB") throw new JpegError("bad_argument");
  if (side !== undefined && !(Number.isInteger(side) && side > 0 && side < 2 ** 31)) throw new JpegError("bad_argument");
  if (!instance) throw new Error("decodeJpeg before loadJpeg");
  const { exports } = await instance;
  const input = exports.input_buffer(bytes.length);
  if (!input) throw new JpegError("no_memory");
  new Uint8Array(exports.memory.buffer, input, bytes.length).set(bytes);
  let at;
  try {
    at = exports.decode(side ?? 0, mode === "L" ? 1 : 0);
  } catch (error) {
    if (!(error instanceof WebAssembly.RuntimeError)) throw error;
    // libjpeg's error_exit traps after writing the status: read it, and start a fresh instance,
    // since the trap left this one's C stack where the error was.
    const [status, libjpegCode] = new Int32Array(exports.memory.buffer, exports.result(), 2);
    instance = compiled.then((module) => WebAssembly.instantiate(module, {}));
    throw new JpegError(status ? CODES[status] : "failed", libjpegCode); // "failed": a trap not libjpeg's
  }
  const [status, libjpegCode, width, height, channels, denominator, pixels] =
    new Int32Array(exports.memory.buffer, at, RESULT_FIELDS);
  if (status !== 0) throw new JpegError(CODES[status], libjpegCode);
  // A copy: the next file's decode reuses the memory.
  const copy = new Uint8Array(exports.memory.buffer, pixels >>> 0, width * height * channels).slice();
  return { pixels: copy, width, height, channels, denominator };
}
