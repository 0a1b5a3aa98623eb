/**
 * Reading whole tensors out of a safetensors file as f32 (F32 copied, F16 and BF16 widened, by
 * the addon's dequantizer). The header comes from lib/formats/safetensors.ts, which has
 * already checked every offset against the file's size.
 */
import { ModelFormatError, UnsupportedError } from '../errors.js';
import { openRegularFile, readAt } from '../formats/open-file.js';
import type { SafetensorsFile } from '../formats/safetensors.js';
import { native } from '../native.js';

/** A ModelFormatError naming the file, the tensor and the element when `values` holds a NaN or Inf. */
export function refuseNonFinite(values: Float32Array, file: string, tensor: string, whatToDo: string): void {
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new ModelFormatError(file, `tensor '${tensor}'`, `holds a non-finite value (${values[bad]}) at element ${bad}; ${whatToDo}`);
}

/** The values of the named tensors of `file`, widened to f32; a NaN or Inf among them is a ModelFormatError naming the tensor. */
export async function readTensorsF32(file: SafetensorsFile, names: string[]): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  const { handle } = await openRegularFile(file.path, 'safetensors file');
  try {
    for (const name of names) {
      const t = file.tensors.get(name);
      if (!t) throw new ModelFormatError(file.path, `tensor '${name}'`, 'is missing');
      if (!['F32', 'F16', 'BF16'].includes(t.dtype))
        throw new UnsupportedError(`${file.path}: tensor '${name}' is stored as ${t.dtype}; only F32, F16 and BF16 can be read`);
      const count = t.shape.reduce((a, b) => a * b, 1);
      const bytes = await readAt(handle, t.offset, t.byteLength);
      if (bytes.length < t.byteLength) throw new ModelFormatError(file.path, `tensor '${name}'`, 'ends past the end of the file; it is truncated');
      const values = native().dequantize(t.dtype, bytes, count);
      refuseNonFinite(values, file.path, name, 'the file is damaged or was saved from a diverged run: use an earlier checkpoint or train again');
      out.set(name, values);
    }
  } finally {
    await handle.close();
  }
  return out;
}
