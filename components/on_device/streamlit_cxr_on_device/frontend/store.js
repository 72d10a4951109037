// What stays in this browser tab and never goes to Python: the decoded X-rays and their class
// activation maps, for the pictures. One module instance is shared by the component's entry points
// (Streamlit loads them by URL, so they import the same module).
export const pictures = new Map(); // "batch/index" -> {gray, cam, box, size}
export const runtime = { cv: null, ready: null };
