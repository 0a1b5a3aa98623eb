/**
 * native().quantize for every block type, against llama.cpp's reference quantizers
 * (quantize_row_<type>_ref, run by tools/reference/quantize_fixture.py through llama-cpp-python's
 * libggml-base) on the same values: the same bytes. Those blocks widen (native().dequantize)
 * to gguf-py's gguf.quants.dequantize values bit for bit, and the rounding error stays within
 * what the type can hold: at most one quantisation step per value, and the relative RMS error
 * on normal weights of llama.cpp's own quantizer (measured on 2^16 normals, +10 %).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { native, type WeightDtype } from '../../lib/native.js';
import { random } from '../helpers/tiny-model.js';

interface Fixture {
  count: number;
  input: string;
  types: Record<string, { quantized: string; dequantized: string }>;
}

const fixture = JSON.parse(readFileSync(join(process.cwd(), 'test', 'fixtures', 'quantize.json'), 'utf8')) as Fixture;
const floats = (b64: string) => {
  const buf = Buffer.from(b64, 'base64');
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
};
const input = floats(fixture.input);

/**
 * The quantisation step of each value's group: groups of `group` values on `levels` levels
 * over `span` (the largest |x|, or the range with 0 included where a type stores a min). In
 * a K-quant super-block the groups' scales are themselves 6- or 8-bit multiples of the
 * largest one, so no group's step is finer than the super-block's widest span / `relative`.
 */
interface Grid {
  group: number;
  levels: number;
  span: 'amax' | 'range';
  relative?: number;
  rms: number;
}

const grids: Record<string, Grid> = {
  Q8_0: { group: 32, levels: 127, span: 'amax', rms: 0.006 },
  Q4_0: { group: 32, levels: 8, span: 'amax', rms: 0.095 },
  Q4_1: { group: 32, levels: 15, span: 'range', rms: 0.087 },
  Q5_0: { group: 32, levels: 16, span: 'amax', rms: 0.048 },
  Q5_1: { group: 32, levels: 31, span: 'range', rms: 0.042 },
  Q4_K: { group: 32, levels: 15, span: 'range', relative: 63, rms: 0.08 },
  Q5_K: { group: 32, levels: 31, span: 'range', relative: 63, rms: 0.04 },
  Q6_K: { group: 16, levels: 32, span: 'amax', relative: 128, rms: 0.02 },
};

function steps(x: Float32Array, g: Grid): Float64Array {
  const spans: number[] = [];
  for (let i = 0; i < x.length; i += g.group) {
    const v = x.subarray(i, i + g.group);
    let lo = 0, hi = 0, amax = 0;
    for (const e of v) (lo = Math.min(lo, e)), (hi = Math.max(hi, e)), (amax = Math.max(amax, Math.abs(e)));
    spans.push(g.span === 'amax' ? amax : hi - lo);
  }
  const out = new Float64Array(x.length);
  const perSuper = g.relative ? 256 / g.group : 1;
  for (let s = 0; s < spans.length; s += perSuper) {
    const widest = Math.max(...spans.slice(s, s + perSuper));
    for (let j = s; j < s + perSuper; j++) out.fill(Math.max(spans[j] / g.levels, g.relative ? widest / g.relative : 0), j * g.group, (j + 1) * g.group);
  }
  return out;
}

const types = Object.keys(grids) as WeightDtype[];

describe('native().quantize matches llama.cpp', () => {
  it.each(types)('%s: the reference quantizer\'s bytes, widened to gguf-py\'s values', (type) => {
    const ref = fixture.types[type];
    const expected = Buffer.from(ref.quantized, 'base64');
    const ours = Buffer.from(native().quantize(type, input));
    expect(ours.length).toBe(expected.length);
    const differing = [...ours].flatMap((b, i) => (b === expected[i] ? [] : [i]));
    expect(differing).toEqual([]);
    const widened = native().dequantize(type, new Uint8Array(expected), fixture.count);
    expect(Buffer.from(widened.buffer).equals(Buffer.from(floats(ref.dequantized).buffer))).toBe(true);
  });

  it.each(types)('%s: within one step of every value, and the RMS error of llama.cpp on normal weights', (type) => {
    const g = grids[type];
    const widened = native().dequantize(type, native().quantize(type, input), fixture.count);
    const step = steps(input, g);
    const over = [...input].flatMap((x, i) => (Math.abs(widened[i] - x) <= step[i] * (1 + 1e-6) ? [] : [i]));
    expect(over).toEqual([]);

    const rng = random(17);
    const normal = Float32Array.from({ length: 1 << 16 }, () => 0.02 * rng.normal());
    const back = native().dequantize(type, native().quantize(type, normal), normal.length);
    let se = 0, ss = 0;
    for (let i = 0; i < normal.length; i++) (se += (back[i] - normal[i]) ** 2), (ss += normal[i] ** 2);
    expect(Math.sqrt(se / ss)).toBeLessThan(g.rms);
    expect(Math.sqrt(se / ss)).toBeGreaterThan(g.rms / 4);
  });
});
