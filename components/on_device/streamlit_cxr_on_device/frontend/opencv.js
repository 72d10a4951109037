// OpenCV.js from its two vendored parts (vendor.py's split_opencv_js): Emscripten's factory, the glue
// script, and its wasm as bytes. Compiled from bytes, the wasm's functions are compiled as they are first
// called: a start of 0.1 s alone (0.2-0.25 s beside the rest of the page's start), where the single 13 MB
// script, wasm inlined, took 0.45 s alone to parse and decode.
// `factory` and `wasm` may be promises, so the glue loads while the wasm compiles.
export async function startOpenCv(factory, wasm) {
  const [make, compiled] = await Promise.all([factory, Promise.resolve(wasm).then((bytes) => WebAssembly.compile(bytes))]);
  return new Promise((resolve, reject) => {
    make({
      instantiateWasm(imports, done) {
        WebAssembly.instantiate(compiled, imports).then((instance) => done(instance, compiled), reject);
        return {}; // Emscripten's sign that the instance comes later, through `done`
      },
    }).then(resolve, reject);
  });
}
