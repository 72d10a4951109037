// What stays in this browser tab and never goes to Python: the decoded X-rays and their class
// activation maps, for the pictures. Streamlit serves each component of the package under its own URL,
// so screen.js and picture.js get separate instances of this module: the store hangs off the window.
const shared = (window.__cxrOnDevice ??= { pictures: new Map(), runtime: { cv: null, ort: null, opencv: null, libjpeg: null } });
export const pictures = shared.pictures; // "batch/index" -> {gray, cam, box, size}
export const runtime = shared.runtime; // OpenCV.js once loaded, and the libraries' promises: once per page load
