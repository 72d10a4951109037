// One result card's picture, drawn in this browser from what the batch kept here (store.js): the X-ray
// as screened and, where asked, its heat map over the part the model read. Python only names it.
import { overlayImage, Cv } from "./pipeline.js";
import { pictures, runtime } from "./store.js";

export default function (component) {
  const { data, parentElement } = component;
  let figure = parentElement.querySelector("figure");
  if (!figure) {
    figure = document.createElement("figure");
    figure.innerHTML = "<canvas></canvas><figcaption></figcaption>";
    parentElement.appendChild(figure);
  }
  const canvas = figure.querySelector("canvas");
  const caption = figure.querySelector("figcaption");
  const local = pictures.get(data.id);
  if (!local || !runtime.cv) {
    canvas.hidden = true;
    caption.textContent = "The picture stays in the browser tab that screened it: screen the file again to see it.";
    return;
  }
  const image = overlayImage(new Cv(runtime.cv), local, data.opacity, data.heat);
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.hidden = false;
  canvas.dataset.testid = "on-device-picture";
  canvas.getContext("2d").putImageData(image, 0, 0);
  caption.textContent = data.caption;
}
