import * as jpeg from "jpeg-js";
import { PNG } from "pngjs";

/** A decoded image, always 3 channels (RGB, HWC); grayscale sources come back with R = G = B. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export type ImageFormat = "jpeg" | "png";

/** What the first bytes say the file is: a format we decode, or the name of one we don't. */
export function sniff(b: Uint8Array): ImageFormat | { other: string | null } {
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a && b[6] === 0x1a && b[7] === 0x0a) {
    return "png";
  }
  const ascii = (i: number, n: number) => String.fromCharCode(...b.subarray(i, i + n));
  if (b.length >= 6 && (ascii(0, 6) === "GIF87a" || ascii(0, 6) === "GIF89a")) return { other: "GIF" };
  if (b.length >= 2 && ascii(0, 2) === "BM") return { other: "BMP" };
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") return { other: "WebP" };
  if (b.length >= 4 && (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*")) return { other: "TIFF" };
  if (b.length >= 12 && ascii(4, 4) === "ftyp") return { other: "HEIF/AVIF" };
  return { other: null };
}

// ImageNet's largest images are a few thousand pixels a side; jpeg-js's default 512 MB cap and
// 100 MP cap are per call, so these only guard against absurd (corrupt or hostile) headers.
const JPEG_OPTS = {
  useTArray: true as const,
  formatAsRGBA: false,
  tolerantDecoding: true,
  maxMemoryUsageInMB: 2048,
  maxResolutionInMP: 250,
};

/** Decodes a JPEG or PNG to RGB. Throws a plain Error with the decoder's reason on failure. */
export function decodeRgb(bytes: Uint8Array, format: ImageFormat): RgbImage {
  if (format === "jpeg") {
    const im = jpeg.decode(bytes, JPEG_OPTS);
    if (!(im.width > 0 && im.height > 0) || im.data.length !== im.width * im.height * 3) {
      throw new Error(`decoded to ${im.width}×${im.height} with ${im.data.length} bytes`);
    }
    return { width: im.width, height: im.height, data: im.data };
  }
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  const n = png.width * png.height;
  const rgba = png.data;
  const rgb = new Uint8Array(n * 3);
  // Alpha is dropped (as PIL's convert("RGB") does): datasets store opaque photos.
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    rgb[i * 3] = rgba[j];
    rgb[i * 3 + 1] = rgba[j + 1];
    rgb[i * 3 + 2] = rgba[j + 2];
  }
  return { width: png.width, height: png.height, data: rgb };
}

/** One axis of a resampling: for output i, taps [start[i], start[i]+count[i]) with `weights`. */
interface Taps {
  start: Int32Array;
  count: Int32Array;
  width: number; // taps per output, the stride in `weights`
  weights: Float32Array;
}

/**
 * Bilinear (triangle) filter weights mapping source [from, from+inSize) to outSize samples. On
 * downscaling the triangle is widened by the scale factor so that every source pixel contributes
 * (the antialiased bilinear of PIL and torchvision's Resize); on upscaling it is plain bilinear.
 */
function taps(from: number, inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const support = Math.max(scale, 1);
  const width = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * width);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support));
    const hi = Math.min(inSize, Math.ceil(center + support));
    let sum = 0;
    const w = new Float64Array(hi - lo);
    for (let j = lo; j < hi; j++) {
      const t = 1 - Math.abs((j + 0.5 - center) / support);
      w[j - lo] = t > 0 ? t : 0;
      sum += w[j - lo];
    }
    start[i] = from + lo;
    count[i] = hi - lo;
    for (let j = 0; j < hi - lo; j++) weights[i * width + j] = sum > 0 ? w[j] / sum : 1 / (hi - lo);
  }
  return { start, count, width, weights };
}

/**
 * Writes `src` into `dst` at `at` as outH×outW with `channels` (1 or 3) channels.
 *
 * Resizing is center-crop-then-resize: the largest centered region with the target's aspect ratio
 * is cut out (so nothing is stretched), then resampled with an antialiased bilinear filter
 * (`taps`). An image already of the target size is copied exactly. Three channels to one uses
 * the integer luma (77R + 150G + 29B + 128) >> 8, which returns a replicated gray pixel exactly.
 */
export function writeImage(src: RgbImage, dst: Uint8Array, at: number, outH: number, outW: number, channels: 1 | 3): void {
  const { width: w, height: h, data } = src;
  if (w === outW && h === outH) {
    if (channels === 3) {
      dst.set(data, at);
    } else {
      for (let i = 0, n = w * h; i < n; i++) {
        dst[at + i] = (77 * data[i * 3] + 150 * data[i * 3 + 1] + 29 * data[i * 3 + 2] + 128) >> 8;
      }
    }
    return;
  }
  // The centered crop with the target's aspect ratio.
  let cw = w;
  let ch = h;
  if (w * outH > h * outW) cw = Math.max(1, Math.round((h * outW) / outH));
  else ch = Math.max(1, Math.round((w * outH) / outW));
  const x0 = Math.floor((w - cw) / 2);
  const y0 = Math.floor((h - ch) / 2);
  const tx = taps(x0, cw, outW);
  const ty = taps(y0, ch, outH);

  // Horizontal pass over the crop's rows into floats, then vertical pass into bytes.
  const tmp = new Float32Array(ch * outW * 3);
  for (let y = 0; y < ch; y++) {
    const row = (y0 + y) * w * 3;
    for (let x = 0; x < outW; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      const s = tx.start[x];
      const wo = x * tx.width;
      for (let k = 0; k < tx.count[x]; k++) {
        const wt = tx.weights[wo + k];
        const p = row + (s + k) * 3;
        r += wt * data[p];
        g += wt * data[p + 1];
        b += wt * data[p + 2];
      }
      const o = (y * outW + x) * 3;
      tmp[o] = r;
      tmp[o + 1] = g;
      tmp[o + 2] = b;
    }
  }
  const clamp = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v));
  for (let y = 0; y < outH; y++) {
    const s = ty.start[y] - y0;
    const wo = y * ty.width;
    for (let x = 0; x < outW; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let k = 0; k < ty.count[y]; k++) {
        const wt = ty.weights[wo + k];
        const p = ((s + k) * outW + x) * 3;
        r += wt * tmp[p];
        g += wt * tmp[p + 1];
        b += wt * tmp[p + 2];
      }
      if (channels === 3) {
        const o = at + (y * outW + x) * 3;
        dst[o] = clamp(r);
        dst[o + 1] = clamp(g);
        dst[o + 2] = clamp(b);
      } else {
        const [R, G, B] = [clamp(r), clamp(g), clamp(b)];
        dst[at + y * outW + x] = (77 * R + 150 * G + 29 * B + 128) >> 8;
      }
    }
  }
}
