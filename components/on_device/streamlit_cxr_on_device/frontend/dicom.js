// DICOM in the browser: core.serving.dicom.decode_dicom step for step, with its refusals in its order,
// pydicom's reading of the stored values, its apply_modality_lut and apply_voi_lut, the MONOCHROME1
// inversion and dicom.reduced. Tags come from dicom-parser, JPEG lossless from jpeg-lossless-decoder-js,
// deflate from the browser's DecompressionStream, RLE from the decoder below. Only the tags named here
// are read: none of a patient's leaves this module.

const DICOM_PARSER = new URL("./vendor/dicom-parser/dicomParser.min.js", import.meta.url).href;
const JPEG_LOSSLESS = new URL("./vendor/jpeg-lossless-decoder-js/lossless-min.js", import.meta.url).href;

// The transfer syntaxes of phase one (PS3.5 section 10, annex A), by how their pixels are stored.
const SYNTAXES = {
  "1.2.840.10008.1.2": "native", // implicit VR little endian
  "1.2.840.10008.1.2.1": "native", // explicit VR little endian
  "1.2.840.10008.1.2.2": "native", // explicit VR big endian (retired, still written)
  "1.2.840.10008.1.2.1.99": "native", // deflated explicit VR little endian: the dataset is inflated first
  "1.2.840.10008.1.2.5": "rle",
  "1.2.840.10008.1.2.4.57": "jpegLossless", // process 14, any predictor
  "1.2.840.10008.1.2.4.70": "jpegLossless", // process 14, selection value 1
};
const DEFLATED = "1.2.840.10008.1.2.1.99";
const BIG_ENDIAN = "1.2.840.10008.1.2.2";
// What pydicom needs to decode pixel data: without one, it raises and the server says the data is corrupt.
const REQUIRED = ["x00280100", "x00280101", "x00280103", "x00280002"]; // bits allocated, stored; sign; samples
// pydicom's sizes of stored value; 1, 32 and 64 bits it reads too, the browser not yet.
const ALLOCATED = [8, 16];

// --- Loading: the parser and the JPEG-lossless decoder (47 KB), when the first DICOM is met ---

let loading = null;

export function loadLibraries() {
  loading ??= Promise.all([classicScript(DICOM_PARSER, "dicomParser"), import(JPEG_LOSSLESS)])
    .then(([dicomParser, lossless]) => ({ dicomParser, lossless }))
    .catch((error) => { loading = null; throw error; }); // a later file tries again
  return loading;
}

// dicom-parser ships as a UMD bundle only: as a classic script it sets window.dicomParser.
function classicScript(src, name) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(window[name]);
    script.onerror = () => reject(new Error(`${src} did not load`));
    document.head.appendChild(script);
  });
}

// --- Decoding ---

const refused = (status, code, extra = {}) => ({ refused: { status, code, ...extra } });

// Deflated explicit VR little endian (PS3.5 A.5): all after the file meta group is raw deflate (RFC 1951),
// padded with a null byte to an even length. Chromium refuses any byte after the deflate stream's end (zlib,
// the server's, ignores it): without the padding, then. dicom-parser's inflater callback is given the file
// and returns it whole with that part inflated.
async function inflated(bytes, position) {
  const inflate = async (part) => new Uint8Array(await new Response(
    new Blob([part]).stream().pipeThrough(new DecompressionStream("deflate-raw"))).arrayBuffer());
  const deflated = bytes.subarray(position);
  const body = await inflate(deflated).catch((error) => {
    if (deflated.at(-1) !== 0) throw error;
    return inflate(deflated.subarray(0, -1));
  });
  const whole = new Uint8Array(position + body.length);
  whole.set(bytes.subarray(0, position));
  whole.set(body, position);
  return whole;
}

// The file's tags, or null where the server's pydicom would find no pixel data in it: pydicom reads a
// damaged file as far as it goes, where dicom-parser throws (with what it read, past the file meta).
// A deflated dataset that does not inflate throws: pydicom raises there too.
async function parsed(dicomParser, bytes) {
  let meta, syntax;
  try {
    meta = dicomParser.readPart10Header(bytes);
    syntax = meta.string("x00020010");
  } catch {
    return null;
  }
  const whole = syntax === DEFLATED ? await inflated(bytes, meta.position) : null;
  let dataSet;
  try {
    dataSet = dicomParser.parseDicom(bytes, whole ? { inflater: () => whole } : {});
  } catch (error) {
    if (!error?.dataSet) return null;
    dataSet = error.dataSet;
  }
  const pixels = dataSet.elements.x7fe00010;
  // PS3.5 A.4: encapsulated pixel data ends with a sequence delimiter (FFFE,E0DD; dicom-parser counts it in
  // the element's length); without one pydicom keeps no pixel data.
  if (pixels?.encapsulatedPixelData) {
    const at = pixels.dataOffset + pixels.length - 8, b = dataSet.byteArray;
    if (!(b[at] === 0xfe && b[at + 1] === 0xff && b[at + 2] === 0xdd && b[at + 3] === 0xe0)) {
      delete dataSet.elements.x7fe00010;
    }
  }
  return { dataSet, syntax };
}

// pydicom's str() of a text tag, "" when present but empty; null when absent.
function text(dataSet, tag) {
  return dataSet.elements[tag] ? (dataSet.string(tag) ?? "") : null;
}

// The file as the server's decode_dicom reads it: {pixels (Float64Array, as displayed), width, height},
// or {refused: {status, code, ...}} with the server's reason as a code (ui/on_device.py words it).
export async function decodeDicom(bytes, libraries, cv, constants) {
  let read;
  try {
    read = await parsed(libraries.dicomParser, bytes);
  } catch {
    return refused("error", "dicom_corrupt");
  }
  if (!read) return refused("error", "dicom_no_image");
  const { dataSet, syntax } = read;
  const modality = (text(dataSet, "x00080060") || "").toUpperCase();
  if (modality && !constants.RADIOGRAPH_MODALITIES.includes(modality)) {
    return refused("error", "dicom_modality", { modality });
  }
  const pixelData = dataSet.elements.x7fe00010;
  if (!pixelData) return refused("error", "dicom_no_image");
  const frames = parseInt(text(dataSet, "x00280008") || "1", 10) || 1;
  const rows = dataSet.uint16("x00280010"), columns = dataSet.uint16("x00280011");
  if (rows === undefined || columns === undefined) return refused("error", "dicom_no_size");
  if (frames > 1) return refused("error", "dicom_frames", { frames });
  if (rows * columns > constants.MAX_PIXELS) {
    return refused("error", "too_many_pixels", { width: columns, height: rows });
  }
  const photometric = text(dataSet, "x00280004") ?? "MONOCHROME2";
  if (!["MONOCHROME1", "MONOCHROME2"].includes(photometric)) {
    return refused("error", "dicom_colour", { photometric });
  }
  // The server decodes every syntax pydicom and its plugins know; those the browser does not, it hands over.
  if (!SYNTAXES[syntax]) return refused("server", "dicom_syntax", { transfer_syntax: syntax });
  if (REQUIRED.some((tag) => !dataSet.elements[tag]) || !dataSet.elements.x00280004) {
    return refused("error", "dicom_pixels_corrupt");
  }
  const format = {
    rows, columns, allocated: dataSet.uint16("x00280100"), stored: dataSet.uint16("x00280101"),
    signed: dataSet.uint16("x00280103") === 1, samples: dataSet.uint16("x00280002"),
  };
  if (format.samples !== 1 || !ALLOCATED.includes(format.allocated)) {
    return refused("server", "dicom_pixels", { samples: format.samples, bits: format.allocated });
  }
  let pixels;
  try {
    pixels = storedValues(dataSet, pixelData, syntax, format, libraries);
  } catch (error) {
    // pydicom turns a codec's failure into a RuntimeError, which the server words as its compression's.
    if (error instanceof CodecError) return refused("error", "dicom_compression", { transfer_syntax: syntax });
    return refused("error", "dicom_pixels_corrupt");
  }
  const shown = displayed(pixels, dataSet, format, syntax);
  if (shown.refused) return shown;
  if (photometric === "MONOCHROME1") {
    // MONOCHROME1 stores bone dark: inverted so every image shows bone bright (as the server).
    let low = Infinity, high = -Infinity;
    for (const v of shown) { if (v < low) low = v; if (v > high) high = v; }
    for (let i = 0; i < shown.length; i++) shown[i] = high + low - shown[i];
  }
  return reduced(cv, shown, columns, rows, constants);
}

class CodecError extends Error {}

// The stored values of the one frame, as pydicom's pixel_array gives them (Float64Array, exact).
function storedValues(dataSet, element, syntax, format, { dicomParser, lossless }) {
  const count = format.rows * format.columns;
  const bytesPer = format.allocated / 8;
  let raw, little = syntax !== BIG_ENDIAN;
  if (SYNTAXES[syntax] === "native") {
    if (element.encapsulatedPixelData || element.length < count * bytesPer) throw new Error("short pixel data");
    raw = dataSet.byteArray.subarray(element.dataOffset, element.dataOffset + count * bytesPer);
  } else {
    if (!element.encapsulatedPixelData) throw new CodecError("pixel data not encapsulated");
    // One frame: all the fragments are its (PS3.5 A.4).
    const frame = dicomParser.readEncapsulatedPixelDataFromFragments(dataSet, element, 0, element.fragments.length);
    try {
      raw = SYNTAXES[syntax] === "rle" ? rleFrame(frame, count, bytesPer) : jpegLosslessFrame(lossless, frame, format);
    } catch (error) {
      throw new CodecError(error?.message || String(error));
    }
    little = true; // both decoders give little-endian words
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const values = new Float64Array(count);
  // pydicom's correct_unused_bits: the bits above Bits Stored are dropped (unsigned) or copy its sign bit.
  const unused = 32 - format.stored;
  for (let i = 0; i < count; i++) {
    const word = bytesPer === 1 ? view.getUint8(i) : view.getUint16(2 * i, little);
    values[i] = format.signed ? (word << unused) >> unused : (word << unused) >>> unused;
  }
  return values;
}

// RLE Lossless (PS3.5 annex G): a 64-byte header of little-endian longs (a segment count, then up to 15
// offsets), then one PackBits segment per byte of the sample, the most significant first (G.2). The count
// is not checked: the server's pydicom falls back to pylibjpeg-rle, which reads the offsets alone. Each
// segment must give rows x columns bytes, as both require; more is ignored.
function rleFrame(frame, count, bytesPer) {
  if (frame.length < 64) throw new Error("RLE header");
  const header = new DataView(frame.buffer, frame.byteOffset, 64);
  const out = new Uint8Array(count * bytesPer);
  for (let s = 0; s < bytesPer; s++) {
    const start = header.getUint32(4 + 4 * s, true);
    const end = s + 1 < bytesPer ? header.getUint32(8 + 4 * s, true) : frame.length;
    const segment = frame.subarray(start, end);
    // G.3.1: a byte n of 0..127 is followed by n + 1 literal bytes; of -127..-1, by one byte repeated
    // 1 - n times; -128 is no operation.
    let at = 0, written = 0;
    const lowest = bytesPer - 1 - s; // little-endian position of this segment's byte in each word
    while (at < segment.length && written < count) {
      const n = (segment[at++] << 24) >> 24;
      if (n >= 0) {
        for (let k = 0; k <= n && at < segment.length && written < count; k++) out[bytesPer * written++ + lowest] = segment[at++];
      } else if (n !== -128) {
        const value = segment[at++];
        for (let k = 0; k <= -n && written < count; k++) out[bytesPer * written++ + lowest] = value;
      }
    }
    if (written < count) throw new Error("short RLE segment");
  }
  return out;
}

function jpegLosslessFrame(lossless, frame, format) {
  const decoder = new lossless.Decoder();
  const out = decoder.decode(frame.buffer, frame.byteOffset, frame.length, format.allocated / 8);
  if (decoder.numComp !== 1 || out.length !== format.rows * format.columns) throw new Error("JPEG frame size");
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

// --- pydicom's apply_modality_lut then apply_voi_lut (PS3.3 C.11.1, C.11.2), in float64 as NumPy ---

// NumPy's integer arithmetic wraps at its dtype's width; pydicom's LUT indices are made in such dtypes.
function wrapped(v, bits, signed) {
  const span = 2 ** bits;
  const w = ((Math.trunc(v) % span) + span) % span;
  return signed && w >= span / 2 ? w - span : w;
}

// A LUT item (Modality or VOI LUT Sequence): descriptor (entries, first mapped value, bits) and data.
// LUT Descriptor is "US or SS": its first mapped value is signed where the pixels are (pydicom's rule).
function lutOf(item, signed) {
  const descriptor = item.elements.x00283002, data = item.elements.x00283006;
  if (!descriptor || !data) return null;
  const asSigned = descriptor.vr ? descriptor.vr === "SS" : signed;
  const entries = item.uint16("x00283002", 0) || 65536;
  const first = asSigned ? item.int16("x00283002", 1) : item.uint16("x00283002", 1);
  const bits = item.uint16("x00283002", 2);
  const table = new Float64Array(entries);
  if (data.length < 2 * entries) return { entries, first, bits, table: null };
  for (let i = 0; i < entries; i++) table[i] = item.uint16("x00283006", i);
  return { entries, first, bits, table };
}

function lookUp(values, lut, indexBits, indexSigned) {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const index = values[i] >= lut.first ? wrapped(values[i] - lut.first, indexBits, indexSigned) : 0;
    out[i] = lut.table[Math.min(Math.max(index, 0), lut.entries - 1)];
  }
  return out;
}

function sequenceItem(dataSet, tag) {
  return dataSet.elements[tag]?.items?.[0]?.dataSet ?? null;
}

function displayed(stored, dataSet, format, syntax) {
  const corrupt = refused("error", "dicom_pixels_corrupt");
  let values = stored;
  const modalityItem = sequenceItem(dataSet, "x00283000");
  const modalityLut = modalityItem && lutOf(modalityItem, format.signed);
  // pydicom reads the first item of a Modality LUT Sequence whatever it holds: one it cannot read fails.
  if (modalityItem && !modalityLut) return corrupt;
  const slope = dataSet.elements.x00281053 ? dataSet.floatString("x00281053") : undefined;
  const intercept = dataSet.elements.x00281052 ? dataSet.floatString("x00281052") : undefined;
  if (modalityLut) {
    // The LUT's values are uint8 or uint16 (a NumPy dtype named by its bits: other widths fail there).
    if (!modalityLut.table || ![8, 16].includes(modalityLut.bits)) return corrupt;
    if (modalityLut.bits === 8 && modalityLut.table.some((v) => v > 255)) return corrupt;
    values = lookUp(values, modalityLut, format.allocated, format.signed);
  } else if (slope !== undefined && intercept !== undefined) {
    values = values.map((v) => v * slope + intercept);
  }
  const voiItem = sequenceItem(dataSet, "x00283010");
  const voiLut = voiItem && lutOf(voiItem, format.signed);
  const centre = dataSet.elements.x00281050 ? dataSet.floatString("x00281050", 0) : undefined;
  const width = dataSet.elements.x00281051 ? dataSet.floatString("x00281051", 0) : undefined;
  if (voiLut) {
    // PS3.3 C.8.11.3.1.5: 8 or 10-16 bits an entry; pydicom raises NotImplementedError for others, which
    // the server words as the compression's failure.
    if (voiLut.bits !== 8 && !(voiLut.bits >= 10 && voiLut.bits <= 16)) {
      return refused("error", "dicom_compression", { transfer_syntax: syntax });
    }
    if (!voiLut.table || (voiLut.bits === 8 && voiLut.table.some((v) => v > 255))) return corrupt;
    return lookUp(values, voiLut, voiLut.bits === 8 ? 8 : 16, false);
  }
  if (centre === undefined || width === undefined) return values;
  return windowed(values, dataSet, format, { centre, width, slope, intercept, modalityLut });
}

// pydicom's apply_windowing: LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2, C.11.2.1.3) onto the
// output range of the modality step.
function windowed(values, dataSet, format, { centre, width, slope, intercept, modalityLut }) {
  const corrupt = refused("error", "dicom_pixels_corrupt");
  const fn = (text(dataSet, "x00281056") || "LINEAR").toUpperCase();
  let low, high;
  if (modalityLut) [low, high] = [0, 2 ** modalityLut.bits - 1];
  else if (!format.signed) [low, high] = [0, 2 ** format.stored - 1];
  else [low, high] = [-(2 ** (format.stored - 1)), 2 ** (format.stored - 1) - 1];
  if (slope !== undefined && intercept !== undefined) [low, high] = [low * slope + intercept, high * slope + intercept];
  const range = high - low;
  if (fn === "SIGMOID") {
    if (width <= 0) return corrupt;
    return values.map((v) => range / (1 + Math.exp((-4 * (v - centre)) / width)) + low);
  }
  if (fn !== "LINEAR" && fn !== "LINEAR_EXACT") return corrupt;
  let c = centre, w = width;
  if (fn === "LINEAR") {
    if (w < 1) return corrupt;
    c -= 0.5;
    w -= 1;
  } else if (w <= 0) return corrupt;
  return values.map((v) => {
    if (v <= c - w / 2) return low;
    if (v > c + w / 2) return high;
    return ((v - c) / w + 0.5) * range + low;
  });
}

// core.serving.dicom.reduced: averaged down by the largest factor of 2, 4 or 8 that leaves DECODE_SIDE a
// side, in float32 by OpenCV's INTER_AREA (OpenCV.js, the server's library).
function reduced(cv, pixels, width, height, constants) {
  let factor = 1;
  while (factor < constants.MAX_REDUCTION && Math.floor(Math.min(width, height) / (2 * factor)) >= constants.DECODE_SIDE) {
    factor *= 2;
  }
  if (factor === 1) return { pixels, width, height, channels: 1 };
  const src = cv.cv.matFromArray(height, width, cv.cv.CV_32F, Float32Array.from(pixels)), dst = new cv.cv.Mat();
  const size = new cv.cv.Size(Math.floor(width / factor), Math.floor(height / factor));
  cv.cv.resize(src, dst, size, 0, 0, cv.cv.INTER_AREA);
  const out = { pixels: Float64Array.from(dst.data32F), width: dst.cols, height: dst.rows, channels: 1 };
  src.delete(); dst.delete();
  return out;
}
