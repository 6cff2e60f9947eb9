// The drawing pad: white strokes on black, like MNIST. It hands each finished drawing,
// framed the way MNIST digits are, to a callback as a PNG blob.

const pad = { canvas: null, drawing: false, last: null };

function clearPad() {
  const ctx = pad.canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.canvas.width, pad.canvas.height);
}

function padPoint(event) {
  const rect = pad.canvas.getBoundingClientRect();
  return [
    ((event.clientX - rect.left) * pad.canvas.width) / rect.width,
    ((event.clientY - rect.top) * pad.canvas.height) / rect.height,
  ];
}

function strokeTo(point) {
  const ctx = pad.canvas.getContext("2d");
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = pad.canvas.width / 12; // about MNIST's 2-3 px pen at 28 px
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(...pad.last);
  ctx.lineTo(...point);
  ctx.stroke();
  pad.last = point;
}

// The bounding box of the ink: [left, top, width, height], or null for an empty pad.
function inkBox() {
  const { width, height } = pad.canvas;
  const pixels = pad.canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let [left, top, right, bottom] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (pixels[(y * width + x) * 4] > 32) {
        left = Math.min(left, x);
        right = Math.max(right, x);
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
      }
    }
  }
  return right < 0 ? null : [left, top, right - left + 1, bottom - top + 1];
}

// MNIST digits are scaled to fit 20x20 pixels and centred in 28x28: do the same to the
// drawing, so a small or off-centre digit looks to the model like the digits it learned.
export function framedDrawing() {
  const box = inkBox();
  if (!box) return null;
  const [left, top, w, h] = box;
  const { width, height } = pad.canvas;
  const scale = (width * (20 / 28)) / Math.max(w, h);
  const framed = document.createElement("canvas");
  framed.width = width;
  framed.height = height;
  const ctx = framed.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  const [dw, dh] = [w * scale, h * scale];
  ctx.drawImage(pad.canvas, left, top, w, h, (width - dw) / 2, (height - dh) / 2, dw, dh);
  return new Promise((resolve) => framed.toBlob(resolve, "image/png"));
}

// `onRelease` runs when a stroke ends; `clearButton` wipes the pad.
export function setUpPad(canvas, clearButton, onRelease) {
  pad.canvas = canvas;
  canvas.getContext("2d", { willReadFrequently: true }); // the first call sets the options
  clearPad();
  canvas.addEventListener("pointerdown", (event) => {
    pad.drawing = true;
    canvas.setPointerCapture(event.pointerId);
    pad.last = padPoint(event);
    strokeTo(pad.last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (pad.drawing) strokeTo(padPoint(event));
  });
  const end = () => {
    if (!pad.drawing) return;
    pad.drawing = false;
    onRelease();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  clearButton.addEventListener("click", clearPad);
}
