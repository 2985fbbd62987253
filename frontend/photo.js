// The photo as it leaves the device: upright, downscaled, re-encoded, without EXIF.
// A 12-megapixel phone photo is 3–6 MB and carries the phone's EXIF block (often the GPS
// position where the patient was photographed). The models read a few hundred pixels and
// the functions work at 512 px at most, so a 1024 px JPEG loses nothing they use.
// A picture already that small (a dermatoscope's export, an archive image) goes as its own
// bytes with only the metadata cut out: re-encoding would change every pixel, and a model
// served with its training pipeline's own decode should see the file's pixels, as its
// authors' code would.
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
    if (scale === 1) {
      const own = await withoutMetadata(file);
      // Its own bytes when they are not much heavier on a phone's uplink than the copy.
      if (own && own.size <= Math.max(2 * blob.size, OWN_BYTES)) {
        return { blob: own, name: file.name || "image", prepared: true, own: true, width, height };
      }
    }
    const base = (file.name || "photo").replace(/\.[^.]*$/, "");
    return { blob, name: `${base}.jpg`, prepared: true, width, height };
  }

  const OWN_BYTES = 512 * 1024;
  const JPEG_KEPT = new Set([0xe0, 0xee]); // APP0 (JFIF), APP14 (Adobe: the colour transform)
  const PNG_DROPPED = new Set(["tEXt", "zTXt", "iTXt", "eXIf", "tIME"]);

  // The file's bytes without metadata (JPEG: APP1–APP13, APP15 and comments, where EXIF, XMP
  // and IPTC live; PNG: text, EXIF and time chunks); null for other formats and for a JPEG
  // whose EXIF turns it (the re-encoded copy is upright instead).
  async function withoutMetadata(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (bytes[0] === 0xff && bytes[1] === 0xd8) return jpegWithout(bytes);
    if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
      return pngWithout(bytes);
    }
    return null;
  }

  function jpegWithout(bytes) {
    const parts = [bytes.subarray(0, 2)];
    let at = 2;
    while (at + 4 <= bytes.length && bytes[at] === 0xff) {
      const marker = bytes[at + 1];
      if (marker === 0xda) { parts.push(bytes.subarray(at)); return new Blob(parts, { type: "image/jpeg" }); }
      const length = (bytes[at + 2] << 8) | bytes[at + 3];
      const segment = bytes.subarray(at, at + 2 + length);
      const metadata = (marker >= 0xe1 && marker <= 0xef && !JPEG_KEPT.has(marker)) || marker === 0xfe;
      if (marker === 0xe1 && exifOrientation(segment) > 1) return null;
      if (!metadata) parts.push(segment);
      at += 2 + length;
    }
    return null; // not a stream this walk understands: re-encode
  }

  // The EXIF orientation tag (0x0112) of an APP1 segment, 1 when there is none.
  function exifOrientation(segment) {
    const view = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
    if (segment.length < 18 || view.getUint32(4) !== 0x45786966) return 1; // "Exif"
    const tiff = 10;
    const little = view.getUint16(tiff) === 0x4949;
    const ifd = tiff + view.getUint32(tiff + 4, little);
    if (ifd + 2 > segment.length) return 1;
    const count = view.getUint16(ifd, little);
    for (let i = 0; i < count; i++) {
      const entry = ifd + 2 + i * 12;
      if (entry + 12 > segment.length) break;
      if (view.getUint16(entry, little) === 0x0112) return view.getUint16(entry + 8, little);
    }
    return 1;
  }

  function pngWithout(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const parts = [bytes.subarray(0, 8)];
    let at = 8;
    while (at + 12 <= bytes.length) {
      const length = view.getUint32(at);
      const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
      const chunk = bytes.subarray(at, at + 12 + length);
      if (!PNG_DROPPED.has(type)) parts.push(chunk);
      at += 12 + length;
      if (type === "IEND") return new Blob(parts, { type: "image/png" });
    }
    return null;
  }

  window.DermcamPhoto = { prepare, LONG_SIDE };
})();
