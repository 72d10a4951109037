// The screening pipeline in the browser: the same steps, in the same order, as core.serving
// (imaging.decode_image, quality.check_chest_xray, framing, imaging.contrast_step, tta, network).
// Resizes, CLAHE, the Laplacian and colour conversion are OpenCV's own (OpenCV.js), so they give the
// server's pixels; the forward passes are the shipped ONNX files in onnxruntime-web. Every constant
// comes from Python (ui/on_device.py sends core's), so there is one source for each.
// Nothing here sends anything anywhere: results are numbers and codes, turned into words in Python.
import { LIBJPEG_TURBO, decodeJpeg } from "./jpeg.js";

// Python's round(): halves to even. Margins and frame edges are rounded this way on the server.
export function pyRound(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

const f32 = Math.fround;

// --- Headers: what Pillow would learn before decoding (mode, size, EXIF), read from the bytes ---

export function sniff(bytes) {
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "JPEG";
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (png.every((b, i) => bytes[i] === b)) return "PNG";
  if (bytes.length >= 132 && String.fromCharCode(...bytes.subarray(128, 132)) === "DICM") return "DICOM";
  return null;
}

function u16(bytes, at, little) {
  return little ? bytes[at] | (bytes[at + 1] << 8) : (bytes[at] << 8) | bytes[at + 1];
}
function u32(bytes, at, little) {
  return little
    ? (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0
    : ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
}

const ORIENTATION = 0x0112;
// XMP's orientation, which Pillow's getexif reads where EXIF has none (Image.getexif).
const XMP_ORIENTATION = /tiff:Orientation(="|>)([0-9])/;

const SHORT = 3, LONG = 4, SSHORT = 8, SLONG = 9; // TIFF field types

// The tags of EXIF's first image directory (TIFF layout, either byte order), as {tag: its value where it is
// one integer, else null}: the server asks whether a camera's make or model is there at all
// (imaging._from_camera), and turns the picture as the orientation tag says (ImageOps.exif_transpose).
function exifTags(bytes, start, end) {
  if (end - start < 8) return {};
  const little = bytes[start] === 0x49;
  const ifd = start + u32(bytes, start + 4, little);
  if (ifd + 2 > end) return {};
  const tags = {};
  const count = u16(bytes, ifd, little);
  for (let i = 0; i < count && ifd + 2 + 12 * i + 12 <= end; i++) {
    const entry = ifd + 2 + 12 * i;
    const type = u16(bytes, entry + 2, little), count = u32(bytes, entry + 4, little);
    const short = u16(bytes, entry + 8, little), long = u32(bytes, entry + 8, little);
    tags[u16(bytes, entry, little)] = count !== 1 ? null
      : { [SHORT]: short, [LONG]: long, [SSHORT]: short << 16 >> 16, [SLONG]: long | 0 }[type] ?? null;
  }
  return tags;
}

// JPEG: size, components, EXIF tags; whether the file ends (Pillow refuses a truncated JPEG).
export function jpegHeader(bytes) {
  let at = 2;
  const header = { exif: {}, components: 0, width: 0, height: 0 };
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) { at += 1; continue; } // stray bytes between segments: Pillow and libjpeg skip them
    const marker = bytes[at + 1];
    if (marker === 0xff) { at += 1; continue; }
    // SOI, restart markers, TEM and a stuffed 0xFF 0x00: no length follows (Pillow and libjpeg pass them).
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01 || marker === 0x00) { at += 2; continue; }
    const length = u16(bytes, at + 2, false);
    const app1 = marker === 0xe1 ? String.fromCharCode(...bytes.subarray(at + 4, at + 10)) : "";
    if (app1 === "Exif\0\0" && !header.hasExif) { // Pillow keeps the first
      header.exif = exifTags(bytes, at + 10, at + 2 + length);
      header.hasExif = true;
    } else if (app1 === "http:/") { // XMP: Pillow keeps the last
      const xmp = new TextDecoder("latin1").decode(bytes.subarray(at + 4, at + 2 + length));
      if (xmp.startsWith("http://ns.adobe.com/xap/1.0/\0")) header.xmpOrientation = xmpOrientation(xmp);
    }
    // SOF0-15 except DHT (c4), JPG (c8) and DAC (cc).
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      header.height = u16(bytes, at + 5, false);
      header.width = u16(bytes, at + 7, false);
      header.components = bytes[at + 9];
      header.progressive = marker === 0xc2;
    }
    if (marker === 0xda) break; // start of scan: the entropy-coded data follows
    at += 2 + length;
  }
  if (!header.width) return null;
  let end = bytes.length - 1;
  while (end > 0 && bytes[end] === 0) end--; // some writers pad after the end marker
  header.complete = bytes[end - 1] === 0xff && bytes[end] === 0xd9;
  header.mode = { 1: "L", 3: "RGB", 4: "CMYK" }[header.components] || "other";
  // An orientation tag Pillow reads otherwise (a tuple, a rational): the server turns it as it reads it.
  header.orientationUnread = ORIENTATION in header.exif && header.exif[ORIENTATION] === null;
  header.orientation = header.exif[ORIENTATION] ?? header.xmpOrientation ?? 1;
  return header;
}

function xmpOrientation(xmp) {
  const found = XMP_ORIENTATION.exec(xmp);
  return found ? Number(found[2]) : undefined;
}

// PNG: size, bit depth, colour type, transparency, EXIF, XMP orientation; whether IEND is there.
export function pngHeader(bytes) {
  const header = { width: 0, height: 0, exif: {}, transparency: false, complete: false };
  let at = 8;
  while (at + 8 <= bytes.length) {
    const length = u32(bytes, at, false);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (type === "IHDR") {
      header.width = u32(bytes, at + 8, false);
      header.height = u32(bytes, at + 12, false);
      header.bitDepth = bytes[at + 16];
      header.colourType = bytes[at + 17];
    } else if (type === "tRNS") header.transparency = true;
    else if (type === "eXIf") header.hasExif = true;
    else if (type === "iTXt" || type === "tEXt" || type === "zTXt") {
      // Pillow's getexif turns a PNG by the tiff:Orientation of its XMP text chunk.
      const text = new TextDecoder("latin1").decode(bytes.subarray(at + 8, at + 8 + length));
      const keyword = "XML:com.adobe.xmp\0";
      // iTXt: keyword, NUL, then its compression flag; a compressed one is not read here: the server reads it.
      const compressed = type === "zTXt" || (type === "iTXt" && text.charCodeAt(keyword.length) === 1);
      if (text.startsWith(keyword) && (compressed || xmpOrientation(text) !== undefined)) header.xmpOrientation = true;
    }
    else if (type === "IEND") { header.complete = true; break; }
    at += 12 + length;
  }
  if (!header.width) return null;
  const modes = { 0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA" };
  header.mode = header.bitDepth === 8 || (header.colourType === 3 && header.bitDepth <= 8)
    ? modes[header.colourType] || "other" : `${header.bitDepth}-bit`;
  return header;
}

// ImageOps.exif_transpose: the picture turned as its orientation tag (1-8) says.
export function transposed(picture, orientation) {
  const { pixels, width, height, channels } = picture;
  if (!(orientation >= 2 && orientation <= 8)) return picture;
  const swap = orientation >= 5; // 5-8 exchange rows and columns
  const [outWidth, outHeight] = swap ? [height, width] : [width, height];
  // Where (x, y) of the turned picture comes from, by Pillow's transposition for each value.
  const source = {
    2: (x, y) => [width - 1 - x, y], 3: (x, y) => [width - 1 - x, height - 1 - y], 4: (x, y) => [x, height - 1 - y],
    5: (x, y) => [y, x], 6: (x, y) => [y, height - 1 - x], 7: (x, y) => [width - 1 - y, height - 1 - x],
    8: (x, y) => [width - 1 - y, x],
  }[orientation];
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const [sx, sy] = source(x, y);
      const from = (sy * width + sx) * channels, to = (y * outWidth + x) * channels;
      for (let c = 0; c < channels; c++) out[to + c] = pixels[from + c];
    }
  }
  return { pixels: out, width: outWidth, height: outHeight, channels };
}

// A PNG as Pillow gives it: 8-bit gray (L) or RGB (a PNG with EXIF goes to the server).
// colorSpaceConversion "none": the file's own values, as Pillow reads them (no colour management).
export async function decodePixels(bytes, mode) {
  const bitmap = await createImageBitmap(new Blob([bytes]), {
    colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "none", // a turned PNG goes to the server
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  bitmap.close();
  const { width, height } = canvas;
  const channels = mode === "L" ? 1 : 3;
  const pixels = new Uint8Array(width * height * channels);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    pixels[j++] = rgba[i];
    if (channels === 3) { pixels[j++] = rgba[i + 1]; pixels[j++] = rgba[i + 2]; }
  }
  return { pixels, width, height, channels };
}

// --- OpenCV helpers: Mats made and freed here, plain typed arrays outside ---

export class Cv {
  constructor(cv) { this.cv = cv; }

  mat(image) {
    const type = image.channels === 3 ? this.cv.CV_8UC3 : this.cv.CV_8UC1;
    const mat = new this.cv.Mat(image.height, image.width, type);
    mat.data.set(image.pixels);
    return mat;
  }

  // cv2.resize(gray, (size, size), interpolation=INTER_AREA) of a uint8 image.
  areaResize(image, width, height) {
    const src = this.mat(image), dst = new this.cv.Mat();
    this.cv.resize(src, dst, new this.cv.Size(width, height), 0, 0, this.cv.INTER_AREA);
    const out = { pixels: dst.data.slice(), width: dst.cols, height: dst.rows, channels: image.channels };
    src.delete(); dst.delete();
    return out;
  }

  // cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=INTER_AREA): OpenCV sizes the result.
  scaleResize(image, scale) {
    const src = this.mat(image), dst = new this.cv.Mat();
    this.cv.resize(src, dst, new this.cv.Size(0, 0), scale, scale, this.cv.INTER_AREA);
    const out = { pixels: dst.data.slice(), width: dst.cols, height: dst.rows, channels: image.channels };
    src.delete(); dst.delete();
    return out;
  }

  rgbToGray(image) {
    const src = this.mat(image), dst = new this.cv.Mat();
    this.cv.cvtColor(src, dst, this.cv.COLOR_RGB2GRAY);
    const out = { pixels: dst.data.slice(), width: dst.cols, height: dst.rows, channels: 1 };
    src.delete(); dst.delete();
    return out;
  }

  clahe(gray) {
    const src = this.mat(gray), dst = new this.cv.Mat();
    const clahe = new this.cv.CLAHE(2.0, new this.cv.Size(8, 8));
    clahe.apply(src, dst);
    const out = { ...gray, pixels: dst.data.slice() };
    clahe.delete(); src.delete(); dst.delete();
    return out;
  }

  equalise(gray) {
    const src = this.mat(gray), dst = new this.cv.Mat();
    this.cv.equalizeHist(src, dst);
    const out = { ...gray, pixels: dst.data.slice() };
    src.delete(); dst.delete();
    return out;
  }

  // Mean |Laplacian| of a float32 image (cv2.Laplacian(small, cv2.CV_32F), its default 3x3 aperture).
  meanAbsLaplacian(values, width, height) {
    const src = this.cv.matFromArray(height, width, this.cv.CV_32F, values), dst = new this.cv.Mat();
    this.cv.Laplacian(src, dst, this.cv.CV_32F);
    const data = dst.data32F;
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += Math.abs(data[i]);
    src.delete(); dst.delete();
    return sum / data.length;
  }

  // core.serving.tta.zoom of one (size, size) float32 plane.
  zoom(plane, size, factor) {
    if (factor === 1.0) return plane;
    const src = this.cv.matFromArray(size, size, this.cv.CV_32F, plane), dst = new this.cv.Mat();
    if (factor > 1.0) {
      const margin = pyRound(size * (1.0 - 1.0 / factor) / 2);
      const roi = src.roi(new this.cv.Rect(margin, margin, size - 2 * margin, size - 2 * margin));
      this.cv.resize(roi, dst, new this.cv.Size(size, size), 0, 0, this.cv.INTER_LINEAR);
      roi.delete();
    } else {
      const margin = pyRound(size * (1.0 / factor - 1.0) / 2);
      const padded = new this.cv.Mat();
      this.cv.copyMakeBorder(src, padded, margin, margin, margin, margin, this.cv.BORDER_REFLECT_101);
      this.cv.resize(padded, dst, new this.cv.Size(size, size), 0, 0, this.cv.INTER_AREA);
      padded.delete();
    }
    const out = dst.data32F.slice();
    src.delete(); dst.delete();
    return out;
  }
}

// --- Pictures: photo.as_sent, photo.tinted, photo.drawn_margin, photo.colourfulness ---

function colourfulness(cv, rgb, side) {
  const scale = side / Math.min(rgb.width, rgb.height);
  const view = scale < 1 ? cv.scaleResize(rgb, scale) : rgb;
  const n = view.width * view.height;
  const rg = new Float64Array(n), yb = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = view.pixels[3 * i], g = view.pixels[3 * i + 1], b = view.pixels[3 * i + 2];
    rg[i] = r - g;
    yb[i] = 0.5 * (r + g) - b;
  }
  const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
  const std = (a, m) => Math.sqrt(a.reduce((s, v) => s + (v - m) * (v - m), 0) / a.length);
  const mrg = mean(rg), myb = mean(yb);
  return Math.hypot(std(rg, mrg), std(yb, myb)) + 0.3 * Math.hypot(mrg, myb);
}

// Grey-world balance (photo.white_balanced), in float32 as NumPy does it.
export function whiteBalanced(rgb, saturated) {
  const n = rgb.width * rgb.height;
  // NumPy's mean over the pixels' axis adds row after row in float32: so here, in the same order.
  const sums = [0, 0, 0];
  let usable = 0;
  for (let i = 0; i < n; i++) {
    const r = rgb.pixels[3 * i], g = rgb.pixels[3 * i + 1], b = rgb.pixels[3 * i + 2];
    if (r < saturated && g < saturated && b < saturated) {
      sums[0] = f32(sums[0] + r); sums[1] = f32(sums[1] + g); sums[2] = f32(sums[2] + b); usable++;
    }
  }
  if (usable / n < 0.05) return rgb;
  const means = sums.map((s) => f32(s / usable));
  const grey = f32(f32(f32(means[0] + means[1]) + means[2]) / 3);
  const gains = means.map((m) => f32(grey / Math.max(m, 1.0)));
  const out = new Uint8Array(rgb.pixels.length);
  for (let i = 0; i < rgb.pixels.length; i++) {
    const v = f32(rgb.pixels[i] * gains[i % 3]);
    out[i] = Math.floor(f32(Math.min(Math.max(v, 0), 255) + 0.5));
  }
  return { ...rgb, pixels: out };
}

export function drawnMargin(gray, padding) {
  const { pixels, width, height } = gray;
  const lines = [
    Array.from({ length: width }, (_, x) => pixels[x]),
    Array.from({ length: width }, (_, x) => pixels[(height - 1) * width + x]),
    Array.from({ length: height }, (_, y) => pixels[y * width]),
    Array.from({ length: height }, (_, y) => pixels[y * width + width - 1]),
  ];
  return lines.some((line) => Math.min(...line) === Math.max(...line) && line[0] > padding);
}

// imaging.to_uint8: intensities stretched to the full 8-bit range (NumPy float64, then np.round), from
// 8-bit pixels or a DICOM's displayed values.
function toUint8(gray) {
  let low = Infinity, high = -Infinity;
  for (const v of gray.pixels) {
    if (!Number.isFinite(v)) return { error: "invalid_values" };
    if (v < low) low = v;
    if (v > high) high = v;
  }
  if (high - low < 1e-9) return { error: "blank" };
  const out = new Uint8Array(gray.pixels.length);
  const scale = 255.0 / (high - low);
  for (let i = 0; i < out.length; i++) out[i] = roundHalfEven((gray.pixels[i] - low) * scale);
  return { ...gray, pixels: out };
}

function roundHalfEven(x) { return pyRound(x); }

// imaging.decode_image's last steps for every format: to_uint8, then the smallest side (whatever the server
// would find in a picture this small is smaller still).
export function stretched(gray, constants) {
  const out = toUint8(gray);
  if (out.error) return out;
  const { width, height } = out;
  return Math.min(width, height) < constants.MIN_SIDE ? { error: "too_small", sizes: { width, height } } : out;
}

// --- The X-ray check (quality.XrayDetector), in float64 like NumPy ---

function standardised(values) {
  let mean = 0;
  for (const v of values) mean += v;
  mean /= values.length;
  let variance = 0;
  for (const v of values) variance += (v - mean) * (v - mean);
  const std = Math.max(Math.sqrt(variance / values.length), 1e-3);
  return Float64Array.from(values, (v) => (v - mean) / std);
}

export function layoutResidual(cv, detector, gray) {
  const small = cv.areaResize(gray, 32, 32);
  const flat = standardised(Float32Array.from(small.pixels, (v) => v / 255));
  let best = Infinity;
  for (let f = 0; f < detector.means.length; f++) {
    const mean = detector.means[f], components = detector.components[f];
    const centred = flat.map((v, i) => v - mean[i]);
    const reconstruction = new Float64Array(centred.length);
    for (const row of components) {
      let projection = 0;
      for (let i = 0; i < row.length; i++) projection += centred[i] * row[i];
      for (let i = 0; i < row.length; i++) reconstruction[i] += projection * row[i];
    }
    let error = 0;
    for (let i = 0; i < centred.length; i++) error += (centred[i] - reconstruction[i]) ** 2;
    best = Math.min(best, Math.sqrt(error / centred.length));
  }
  return best;
}

// NumPy's default percentile (linear between the closest ranks).
function percentile(sorted, q) {
  const rank = (q / 100) * (sorted.length - 1);
  const below = Math.floor(rank), above = Math.min(below + 1, sorted.length - 1);
  return f32(sorted[below] + (sorted[above] - sorted[below]) * (rank - below));
}

export function profileDistance(cv, detector, constants, gray) {
  const side = constants.PROFILE_SIDE;
  const raw = Float32Array.from(cv.areaResize(gray, side, side).pixels);
  const sorted = Float32Array.from(raw).sort();
  const [lowQ, highQ] = constants.PROFILE_PERCENTILES;
  const low = percentile(sorted, lowQ), high = percentile(sorted, highQ);
  const gain = f32(255.0 / Math.max(f32(high - low), 1.0)); // NumPy: float32 scalars, then np.float32(255 / ...)
  const small = raw.map((v) => Math.min(Math.max(f32(f32(v - low) * gain), 0), 255));
  const bins = new Float64Array(constants.PROFILE_BINS);
  const width = 256 / constants.PROFILE_BINS;
  for (const v of small) bins[Math.min(Math.floor(v / width), bins.length - 1)] += 1;
  let across = 0, down = 0;
  for (let y = 0; y < side; y++) for (let x = 0; x + 1 < side; x++) across += Math.abs(small[y * side + x + 1] - small[y * side + x]);
  for (let y = 0; y + 1 < side; y++) for (let x = 0; x < side; x++) down += Math.abs(small[(y + 1) * side + x] - small[y * side + x]);
  across = f32(across / (side * (side - 1))); // NumPy's mean of a float32 array is a float32
  down = f32(down / (side * (side - 1)));
  const laplacian = cv.meanAbsLaplacian(small, side, side);
  const features = [...Array.from(bins, (c) => Math.sqrt(c / small.length)), Math.log1p(across), Math.log1p(down),
    Math.log1p(laplacian)];
  const centred = features.map((v, i) => v - detector.profile_mean[i]);
  let distance = 0;
  for (let i = 0; i < centred.length; i++) {
    for (let j = 0; j < centred.length; j++) distance += centred[i] * detector.profile_precision[i][j] * centred[j];
  }
  return distance;
}

function rotated180(gray) {
  return { ...gray, pixels: gray.pixels.slice().reverse() };
}

// np.rot90(gray, 1) (a quarter turn anticlockwise) or np.rot90(gray, -1).
function rotated90(gray, k) {
  const { width, height } = gray;
  const pixels = new Uint8Array(width * height);
  for (let i = 0; i < width; i++) {
    for (let j = 0; j < height; j++) {
      pixels[i * height + j] = k === 1 ? gray.pixels[j * width + width - 1 - i] : gray.pixels[(height - 1 - j) * width + i];
    }
  }
  return { ...gray, pixels, width: height, height: width };
}

// quality.orientation_hint: the index in quality._ORIENTATIONS (in its order) of the first turn or
// inversion that gives the image a chest radiograph's layout, else null.
function orientation(cv, detector, gray) {
  const undone = [() => rotated90(gray, 1), () => rotated90(gray, -1), () => rotated180(gray),
    () => ({ ...gray, pixels: gray.pixels.map((v) => 255 - v) })];
  const found = undone.findIndex((fix) => layoutResidual(cv, detector, fix()) <= detector.layout_threshold);
  return found < 0 ? null : found;
}

// --- Framing and the model ---

export async function localiserBox(cv, session, constants, gray, side) {
  const size = constants.LOCALISER_SIZE;
  const small = cv.areaResize(gray, size, size);
  const input = Float32Array.from(small.pixels, (v) => v / 255);
  const output = await session.run({ [session.inputNames[0]]: new session.ort.Tensor("float32", input, [1, size, size, 1]) });
  const prediction = Array.from(output[session.outputNames[0]].data);
  return { prediction, box: frameBox(prediction, gray.height, gray.width, side, constants.LUNG_FIELD_CENTRE) };
}

// framing.frame_box: the standard frame in the image's pixels, [top, left, bottom, right].
export function frameBox(prediction, height, width, side, centre) {
  const [centreRow, centreCol, logHeight, logWidth] = prediction;
  const frameHeight = Math.exp(logHeight), frameWidth = Math.exp(logWidth);
  const row = centreRow + (centre[0] - 0.5) * frameHeight;
  const col = centreCol + (centre[1] - 0.5) * frameWidth;
  const [top, bottom] = span(row, side * frameHeight, height);
  const [left, right] = span(col, side * frameWidth, width);
  return [top, left, bottom, right];
}

function span(centre, length, pixels) {
  if (length >= 1.0) return [0, pixels];
  const start = Math.min(Math.max(centre - length / 2, 0.0), 1.0 - length);
  const first = pyRound(start * pixels);
  return [first, Math.max(first + 1, pyRound((start + length) * pixels))];
}

function crop(gray, [top, left, bottom, right]) {
  const width = right - left, height = bottom - top;
  const pixels = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) pixels.set(gray.pixels.subarray((top + y) * gray.width + left, (top + y) * gray.width + right), y * width);
  return { pixels, width, height, channels: 1 };
}

// imaging._to_tensor: the frame shrunk to the model's size, its contrast step, then [0, 1].
export function modelPlane(cv, gray, spec) {
  let resized = cv.areaResize(gray, spec.size, spec.size);
  if (spec.equalise) resized = cv.equalise(resized);
  if (spec.clahe) resized = cv.clahe(resized);
  return Float32Array.from(resized.pixels, (v) => v / 255);
}

const EPSILON = 1e-7; // core.serving.calibration.EPSILON
function logit(p) {
  const clipped = Math.min(Math.max(p, EPSILON), 1 - EPSILON);
  return Math.log(clipped / (1 - clipped));
}

// Raw probabilities over the test-time zooms, their logit mean (tta.average), the unzoomed view's maps.
export async function forward(cv, session, plane, spec, zooms) {
  const size = spec.size;
  const batch = new Float32Array(zooms.length * size * size);
  zooms.forEach((factor, i) => batch.set(cv.zoom(plane, size, factor), i * size * size));
  const output = await session.run({
    [session.inputNames[0]]: new session.ort.Tensor("float32", batch, [zooms.length, size, size, 1]),
  });
  const raws = Array.from(output[session.outputNames[0]].data);
  const raw = zooms.length > 1 ? 1 / (1 + Math.exp(-raws.reduce((s, p) => s + logit(p), 0) / raws.length)) : raws[0];
  let cam = null;
  if (session.outputNames.length > 1 && zooms.includes(1.0)) {
    const maps = output[session.outputNames[1]];
    const [, h, w, members] = maps.dims;
    const first = zooms.indexOf(1.0) * h * w * members;
    cam = { data: maps.data.slice(first, first + h * w * members), h, w, members };
  }
  return { raws, raw, cam };
}

// --- One file, end to end ---

// What the server needs to say for each outcome is a code and its numbers; ui/on_device.py words it.
export async function screen(bytes, context) {
  const { cv, constants, detector, spec, zooms, localiser, model } = context;
  const timings = {};
  const started = performance.now();
  const fail = (status, code, extra = {}) => ({ status, code, ...extra, timings_ms: { total: performance.now() - started } });
  if (!bytes.length) return fail("error", "empty");
  if (bytes.length > constants.MAX_FILE_BYTES) return fail("error", "file_too_large");
  const format = sniff(bytes);
  if (!format) return fail("error", "unsupported");
  if (format === "DICOM") {
    // core.serving.dicom.decode_dicom (dicom.js), its libraries loaded when the first DICOM is met.
    const dicom = await import("./dicom.js");
    const decoded = await dicom.decodeDicom(bytes, await dicom.loadLibraries(), cv, constants);
    if (decoded.refused) return fail(decoded.refused.status, decoded.refused.code, decoded.refused);
    const gray = stretched(decoded, constants);
    if (gray.error) return fail("error", gray.error, gray.sizes);
    // The server reads a DICOM as it is (no film finder): the X-ray check's measures go to its checks.
    timings.decode_and_preprocess = performance.now() - started;
    return checkedAndScreened(gray, {
      input_kind: "dicom", layout_residual: layoutResidual(cv, detector, gray),
      profile_distance: profileDistance(cv, detector, constants, gray),
    }, 0, context, fail, timings, started);
  }
  const header = format === "PNG" ? pngHeader(bytes) : jpegHeader(bytes);
  if (!header) return fail("error", "corrupt");
  const pixels = header.width * header.height;
  // Pillow refuses a picture over twice its limit as it opens it (Image.MAX_IMAGE_PIXELS), the server one
  // over the limit once the header is read (imaging._open_raster).
  if (pixels > 2 * constants.MAX_PIXELS) return fail("error", "decompression_bomb");
  if (pixels > constants.MAX_PIXELS) return fail("error", "too_many_pixels", { width: header.width, height: header.height });
  if (!["L", "RGB", "P"].includes(header.mode)) return fail("server", "mode", { mode: header.mode });
  if (format === "PNG") {
    // What Pillow reads and a canvas does not: a PNG's EXIF or XMP orientation, the grey kept under a
    // tRNS colour (a canvas stores it premultiplied, so black), the rows of a file cut short.
    if (header.hasExif || header.xmpOrientation) return fail("server", "png_exif");
    if (header.transparency) return fail("server", "png_transparency");
    if (!header.complete) return fail("server", "png_cut_short");
  }
  if (format === "JPEG" && header.orientationUnread) return fail("server", "exif_orientation");
  if (format === "JPEG" && constants.LIBJPEG_TURBO !== LIBJPEG_TURBO) {
    return fail("server", "jpeg_version", { server: constants.LIBJPEG_TURBO, browser: LIBJPEG_TURBO });
  }
  let picture;
  try {
    // A JPEG by libjpeg-turbo as Pillow drafts it (1/2 to 1/8 scale in the DCT for a large one), then
    // turned as its EXIF says (imaging._open_raster); a PNG by the browser, whose decoder gives the same.
    picture = format === "JPEG"
      ? transposed(await decodeJpeg(bytes, { mode: header.mode, side: constants.DECODE_SIDE }), header.orientation)
      : await decodePixels(bytes, header.mode === "L" ? "L" : "RGB");
  } catch (error) {
    // Pillow refuses what libjpeg finds damaged; what it cannot take here (a lossless JPEG, a picture past
    // the wasm's memory) the server may still read.
    if (format === "JPEG" && !["truncated", "corrupt"].includes(error?.code)) {
      return fail("server", "jpeg_decoder", { detail: error?.code || String(error?.message || error) });
    }
    return fail("error", "corrupt");
  }
  // imaging._decode_raster reads the picture as digital first (photo.as_sent, to_uint8): a blank one is
  // refused there, before anything looks for a film in it.
  let colour = 0, gray = picture;
  if (picture.channels === 3) {
    const balanced = whiteBalanced(picture, constants.SATURATED);
    gray = cv.rgbToGray(balanced);
    colour = colourfulness(cv, balanced, constants.CHROMA_SIDE);
  }
  gray = stretched(gray, constants);
  if (gray.error) return fail("error", gray.error, gray.sizes);
  // Evidence of a photo or a screenshot sends the file to the server, whose film and viewport finders
  // are not in the browser yet: a camera's EXIF, a tint, a drawn margin, or a layout not plainly digital.
  if (constants.CAMERA_TAGS.some((tag) => tag in header.exif)) return fail("server", "camera");
  if (picture.channels === 3 && colourfulness(cv, picture, constants.CHROMA_SIDE) > constants.TINTED) {
    return fail("server", "tinted");
  }
  if (drawnMargin(picture.channels === 3 ? cv.rgbToGray(picture) : picture, constants.PADDING)) {
    return fail("server", "drawn_margin");
  }
  const residual = layoutResidual(cv, detector, gray);
  const profile = profileDistance(cv, detector, constants, gray);
  const radiograph = profile <= detector.profile_threshold;
  if (!(radiograph && residual <= constants.DIGITAL_LAYOUT_SHARE * detector.layout_threshold)) {
    return fail("server", "not_plainly_digital", { layout_residual: residual, profile_distance: profile });
  }
  timings.decode_and_preprocess = performance.now() - started;
  return checkedAndScreened(gray, { input_kind: "digital", layout_residual: residual, profile_distance: profile },
    colour, context, fail, timings, started);
}

// quality.check_chest_xray, in its order, then the model (Predictor.screen), for a picture read as it is.
// `base`: its input kind and the X-ray check's two measures. The layout and grey-level refusals are met by
// DICOMs only: a raster picture outside them has been handed to the server's film finder.
async function checkedAndScreened(gray, base, colour, context, fail, timings, started) {
  const { cv, constants, detector, spec, zooms, localiser, model } = context;
  const checked = performance.now();
  if (colour > constants.MAX_COLOURFULNESS) return fail("rejected", "colour", base);
  const { width, height } = gray;
  if (Math.max(width, height) / Math.min(width, height) > constants.MAX_ASPECT_RATIO) {
    return fail("rejected", "elongated", { ...base, width, height });
  }
  if (base.layout_residual > detector.layout_threshold) {
    return fail("rejected", "layout", { ...base, orientation: orientation(cv, detector, gray) });
  }
  if (base.profile_distance > detector.profile_threshold) return fail("rejected", "profile", base);
  if (base.layout_residual - layoutResidual(cv, detector, rotated180(gray)) > constants.UPSIDE_DOWN_MARGIN) {
    return fail("rejected", "upside_down", base);
  }
  let sum = 0, sumSq = 0, clipped = 0;
  for (const v of gray.pixels) {
    const x = f32(v / 255);
    sum += x; sumSq += x * x;
    if (v <= 2 || v >= 253) clipped++;
  }
  const mean = sum / gray.pixels.length;
  const contrast = Math.sqrt(Math.max(sumSq / gray.pixels.length - mean * mean, 0));
  const quality = { std: contrast, clipped: clipped / gray.pixels.length, width, height };
  // The model's input: standard frame, contrast step, zooms (imaging.load_model_input, Predictor._forward).
  const framed = spec.frame ? await localiserBox(cv, localiser, constants, gray, spec.frame_side) : null;
  const box = framed ? framed.box : [0, 0, height, width];
  const plane = modelPlane(cv, crop(gray, box), spec);
  timings.checks = performance.now() - checked;
  const inferred = performance.now();
  const { raws, raw, cam } = await forward(cv, model, plane, spec, zooms);
  timings.inference = performance.now() - inferred;
  timings.total = performance.now() - started;
  return {
    status: "ok", ...base, raw, raws, frame: box, quality, timings_ms: timings,
    // Kept in the browser only (index.js strips them before anything is sent): for the pictures.
    local: { gray, cam, box, size: spec.size },
  };
}

// The pieces the self-test compares with Python's, on pixels already decoded.
export async function probe(gray, context) {
  const { cv, constants, detector, spec, zooms, localiser, model } = context;
  const framed = spec.frame ? await localiserBox(cv, localiser, constants, gray, spec.frame_side) : null;
  const box = framed ? framed.box : [0, 0, gray.height, gray.width];
  const { raws, raw } = await forward(cv, model, modelPlane(cv, crop(gray, box), spec), spec, zooms);
  return {
    layout_residual: layoutResidual(cv, detector, gray),
    profile_distance: profileDistance(cv, detector, constants, gray),
    frame: box, raws, raw,
  };
}

// --- Pictures, drawn here: the X-ray as screened, its heat map over the part the model read ---

// heatmap.member_mean then FrameBox.place then heatmap.overlay, at the display's size (approximate
// for display only: the numbers sent to Python never depend on it).
export function overlayImage(cv, local, opacity, withHeat) {
  const { gray, cam, box } = local;
  const base = cv.mat(gray);
  const rgb = new cv.cv.Mat();
  cv.cv.cvtColor(base, rgb, cv.cv.COLOR_GRAY2RGB);
  if (withHeat && cam) {
    const [top, left, bottom, right] = box;
    const mean = new Float32Array(local.size * local.size);
    for (let m = 0; m < cam.members; m++) {
      const plane = new Float32Array(cam.h * cam.w);
      for (let i = 0; i < plane.length; i++) plane[i] = cam.data[i * cam.members + m];
      const src = cv.cv.matFromArray(cam.h, cam.w, cv.cv.CV_32F, plane), up = new cv.cv.Mat();
      cv.cv.resize(src, up, new cv.cv.Size(local.size, local.size), 0, 0, cv.cv.INTER_LINEAR);
      const values = up.data32F.map((v) => Math.max(v, 0));
      const peak = Math.max(...values);
      values.forEach((v, i) => { mean[i] += (peak > 0 ? v / peak : v) / cam.members; });
      src.delete(); up.delete();
    }
    const peak = Math.max(...mean);
    const heat = cv.cv.matFromArray(local.size, local.size, cv.cv.CV_32F, mean.map((v) => (peak > 0 ? v / peak : v)));
    const placed = new cv.cv.Mat();
    cv.cv.resize(heat, placed, new cv.cv.Size(right - left, bottom - top), 0, 0, cv.cv.INTER_LINEAR);
    const bytes = new cv.cv.Mat();
    placed.convertTo(bytes, cv.cv.CV_8U, 255);
    const coloured = new cv.cv.Mat();
    cv.cv.applyColorMap(bytes, coloured, cv.cv.COLORMAP_JET); // BGR, as in core.serving.heatmap
    const region = rgb.roi(new cv.cv.Rect(left, top, right - left, bottom - top));
    const colouredRgb = new cv.cv.Mat();
    cv.cv.cvtColor(coloured, colouredRgb, cv.cv.COLOR_BGR2RGB);
    cv.cv.addWeighted(colouredRgb, opacity, region, 1 - opacity, 0, region);
    [heat, placed, bytes, coloured, region, colouredRgb].forEach((m) => m.delete());
  }
  const rgba = new cv.cv.Mat();
  cv.cv.cvtColor(rgb, rgba, cv.cv.COLOR_RGB2RGBA);
  const image = new ImageData(new Uint8ClampedArray(rgba.data), rgba.cols, rgba.rows);
  [base, rgb, rgba].forEach((m) => m.delete());
  return image;
}
