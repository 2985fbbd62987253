// The photo as it leaves the device: upright, downscaled, re-encoded, without EXIF.
// A 12-megapixel phone photo is 3–6 MB and carries the phone's EXIF block (often the GPS
// position where the patient was photographed). The models read a few hundred pixels and
// the functions work at 512 px at most, so a 1024 px JPEG loses nothing they use.
(() => {
  "use strict";

  const LONG_SIDE = 1024;
  const QUALITY = 0.85; // at 1024 px, well above what the model and the map resolve

  async function decode(file) {
    // EXIF orientation applied in the decode: the pixels come out upright.
    return createImageBitmap(file, { imageOrientation: "from-image" });
  }

  function encode(canvas) {
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  }

  // → {blob, name, prepared, width, height}. `prepared` is false when the browser cannot
  // decode the file (e.g. HEIC where unsupported): it goes as it is and the server says why.
  async function prepare(file, longSide = LONG_SIDE) {
    let bitmap;
    try {
      bitmap = await decode(file);
    } catch (err) {
      return { blob: file, name: file.name || "image", prepared: false };
    }
    const scale = Math.min(1, longSide / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.fillStyle = "#fff"; // transparency on white, as the server lays it
    context.fillRect(0, 0, width, height);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, width, height);
    bitmap.close();
    const blob = await encode(canvas);
    if (!blob) return { blob: file, name: file.name || "image", prepared: false };
    const base = (file.name || "photo").replace(/\.[^.]*$/, "");
    return { blob, name: `${base}.jpg`, prepared: true, width, height };
  }

  window.DermcamPhoto = { prepare, LONG_SIDE };
})();
