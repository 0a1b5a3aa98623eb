/**
 * Bounded, seeded fuzzing of the loaders. Thousands of mutants of valid GGUF files, safetensors
 * files and config.json files — byte flips, counts/lengths/offsets/dims/types overwritten with
 * huge or awkward values (the writers say where each field sits), truncations, spliced headers,
 * and structural JSON edits that keep the syntax valid — must each either load or throw a
 * ModelFormatError / UnsupportedError that names the file. Never another exception, never a
 * slow case, never a large allocation. The mutants that load are then handed to
 * native().createModel and forward() in a child process (a C++ crash would kill jest), which must
 * neither crash nor refuse them: what the loaders accept, the engine must be able to load.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ModelFormatError, UnsupportedError } from '../../lib/errors.js';
import { loadModelSpec, type ModelSpec } from '../../lib/model/tensors.js';
import { packageRoot } from '../../lib/native.js';
import { makeTinyModel, random } from '../helpers/tiny-model.js';
import { encodeGgufModel, gguf, type EncodedGguf } from '../helpers/write-gguf.js';
import { encodeSafetensors, hfConfigJson, writeHfDirectory } from '../helpers/write-safetensors.js';

/** DIFFUSE_FUZZ_SEED and DIFFUSE_FUZZ_SCALE (a multiplier on the case counts) run other and longer campaigns. */
const SEED = Number(process.env.DIFFUSE_FUZZ_SEED ?? 20240611);
const SCALE = Number(process.env.DIFFUSE_FUZZ_SCALE ?? 1);
const CASES = { gguf: Math.round(1200 * SCALE), safetensors: Math.round(1000 * SCALE), config: Math.round(600 * SCALE) };
/**
 * Any one case using more CPU than this is a hang in the making (typical cases use well under
 * 1 ms). CPU time, not wall time: the machines these tests run on are shared and busy.
 */
const SLOW_CASE_MS = 250;
/** Resident memory may not grow by more than this over the whole run. */
const MAX_RSS_GROWTH = 256 * 2 ** 20;
const NATIVE_SURVIVORS = { gguf: 120, hf: 40 };

const rng = random(SEED);
/** Small models keep each case's file to a few kB. */
const small = { hidden: 16, heads: 2, kvHeads: 1, intermediate: 24, vocab: 32, layers: 2 };
const pick = <T>(items: readonly T[]): T => items[Math.floor(rng.uniform() * items.length)];
const below = (n: number) => Math.floor(rng.uniform() * n);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diffuse-fuzz-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Outcome {
  loaded: number;
  refused: number;
  problems: string[];
  slowest: number;
  survivors: ModelSpec[];
}

/** Loads `path` with the real loaders and classifies what happens. */
async function attempt(path: string, mustName: string, outcome: Outcome, label: string): Promise<ModelSpec | undefined> {
  const started = process.cpuUsage();
  let spec: ModelSpec | undefined;
  try {
    spec = await loadModelSpec(path);
    outcome.loaded++;
  } catch (error) {
    if ((error instanceof ModelFormatError || error instanceof UnsupportedError) && error.message.includes(mustName)) outcome.refused++;
    else outcome.problems.push(`${label}: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  }
  const used = process.cpuUsage(started);
  const took = (used.user + used.system) / 1000;
  outcome.slowest = Math.max(outcome.slowest, took);
  if (took > SLOW_CASE_MS) outcome.problems.push(`${label}: used ${took.toFixed(0)} ms of CPU`);
  return spec;
}

const u64Values = [0n, 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];
const u32Values = [0, 1, 2, 4, 5, 7, 9, 13, 30, 31, 255, 2 ** 31, 2 ** 32 - 1];

function mutateGguf(base: EncodedGguf): { bytes: Buffer; how: string } {
  const bytes = Buffer.from(base.bytes);
  const headerEnd = base.dataOffset;
  switch (below(5)) {
    case 0:
    case 1: {
      // Overwrite a structural field with an awkward value.
      const f = pick(base.fields);
      if (f.size === 8) {
        const v = pick([...u64Values, BigInt(bytes.length), BigInt(bytes.length + 1), BigInt(bytes.length - headerEnd), BigInt(below(bytes.length)), BigInt(below(64))]);
        bytes.writeBigUInt64LE(v, f.pos);
        return { bytes, how: `${f.role} ${f.label} = ${v}` };
      }
      const v = pick([...u32Values, below(64)]);
      bytes.writeUInt32LE(v >>> 0, f.pos);
      return { bytes, how: `${f.role} ${f.label} = ${v}` };
    }
    case 2: {
      // Flip a few bytes, mostly in the header.
      const flips = 1 + below(8);
      for (let i = 0; i < flips; i++) {
        const at = rng.uniform() < 0.85 ? below(headerEnd) : below(bytes.length);
        bytes[at] ^= 1 << below(8);
      }
      return { bytes, how: `${flips} bit flips` };
    }
    case 3: {
      const length = rng.uniform() < 0.7 ? below(headerEnd + 8) : below(bytes.length);
      return { bytes: bytes.subarray(0, length), how: `truncated to ${length}` };
    }
    default: {
      // Cut a slice out of the header, or repeat one.
      const from = below(headerEnd);
      const length = 1 + below(24);
      const cut = rng.uniform() < 0.5;
      const spliced = cut
        ? Buffer.concat([bytes.subarray(0, from), bytes.subarray(from + length)])
        : Buffer.concat([bytes.subarray(0, from + length), bytes.subarray(from)]);
      return { bytes: spliced, how: `${cut ? 'cut' : 'repeated'} ${length} bytes at ${from}` };
    }
  }
}

const awkwardJson: unknown[] = [0, -1, 1, 2, 3, 7, 1.5, 2 ** 31, 2 ** 53, 1e300, -1e-300, 'x', '', null, true, [], [1, 2], {}, { a: 1 }];

function mutateSafetensors(base: Buffer, headerLength: number): { bytes: Buffer; how: string } {
  const bytes = Buffer.from(base);
  switch (below(5)) {
    case 0: {
      const v = pick([...u64Values, BigInt(headerLength - 1), BigInt(headerLength + 1), BigInt(bytes.length), 100_000_001n]);
      bytes.writeBigUInt64LE(v, 0);
      return { bytes, how: `header length = ${v}` };
    }
    case 1: {
      const flips = 1 + below(6);
      for (let i = 0; i < flips; i++) bytes[8 + below(headerLength)] ^= 1 << below(8);
      return { bytes, how: `${flips} bit flips in the header` };
    }
    case 2: {
      const length = below(bytes.length);
      return { bytes: bytes.subarray(0, length), how: `truncated to ${length}` };
    }
    default: {
      // A syntactically valid header with one entry's field replaced, deleted or retyped.
      const header = JSON.parse(bytes.toString('utf8', 8, 8 + headerLength)) as Record<string, Record<string, unknown>>;
      const name = pick(Object.keys(header));
      const entry = header[name];
      const key = pick(['dtype', 'shape', 'data_offsets', 'entry']);
      let how: string;
      if (key === 'entry') {
        header[name] = pick(awkwardJson) as Record<string, unknown>;
        how = `${name} replaced`;
      } else if (name === '__metadata__' || rng.uniform() < 0.2) {
        delete entry[key];
        how = `${name}.${key} deleted`;
      } else if (key === 'dtype') {
        entry.dtype = pick(['F32', 'F16', 'BF16', 'I64', 'F64', 'U8', 'BOOL', 'F8_E4M3', 'Q4', '', 'f32']);
        how = `${name}.dtype = ${entry.dtype}`;
      } else {
        const list = (Array.isArray(entry[key]) ? (entry[key] as unknown[]) : []).slice();
        if (list.length && rng.uniform() < 0.8) list[below(list.length)] = pick([...awkwardJson, below(4096), -below(100)]);
        else list.push(below(100));
        entry[key] = list;
        how = `${name}.${key} = ${JSON.stringify(list)}`;
      }
      const json = Buffer.from(JSON.stringify(header));
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(json.length));
      return { bytes: Buffer.concat([length, json, bytes.subarray(8 + headerLength)]), how };
    }
  }
}

function mutateConfig(base: Record<string, unknown>): { text: string; how: string } {
  const config = structuredClone(base);
  const keys = [...Object.keys(config), 'head_dim', 'rope_scaling', 'rope_parameters', 'num_key_value_heads', 'attention_bias'];
  const edits = 1 + below(3);
  const hows: string[] = [];
  for (let i = 0; i < edits; i++) {
    const key = pick(keys);
    const r = rng.uniform();
    if (r < 0.2) {
      delete config[key];
      hows.push(`-${key}`);
    } else if (r < 0.35 && key.startsWith('rope')) {
      config[key] = { rope_type: pick(['llama3', 'linear', 'default', 'yarn', 3]), factor: pick(awkwardJson), low_freq_factor: pick([1, 0, 'a']), high_freq_factor: 4, original_max_position_embeddings: 8192, rope_theta: pick([1e4, -5, null]) };
      hows.push(`${key} = ${JSON.stringify(config[key])}`);
    } else if (r < 0.45) {
      config.model_type = pick(['llama', 'mistral', 'qwen2', 'gemma', 'LLAMA', '', 5]);
      hows.push(`model_type = ${config.model_type}`);
    } else {
      config[key] = pick([...awkwardJson, below(128), (config[key] as number) * 2, (config[key] as number) + 1]);
      hows.push(`${key} = ${JSON.stringify(config[key])}`);
    }
  }
  let text = JSON.stringify(config, null, 1);
  if (rng.uniform() < 0.25) {
    const at = below(text.length);
    text = text.slice(0, at) + String.fromCharCode(text.charCodeAt(at) ^ (1 << below(7))) + text.slice(at + 1);
    hows.push(`byte ${at} flipped`);
  }
  return { text, how: hows.join(', ') };
}

/** Runs createModel + forward on each spec in a fresh node process; returns its report. */
function loadNatively(specs: ModelSpec[]): { status: number | null; signal: string | null; results: string[]; stderr: string } {
  const child = `
    import { createRequire } from 'node:module';
    const require = createRequire(${JSON.stringify(join(packageRoot, 'package.json'))});
    const addon = require('node-gyp-build')(${JSON.stringify(packageRoot)});
    let input = '';
    for await (const chunk of process.stdin) input += chunk;
    const results = [];
    for (const spec of JSON.parse(input)) {
      try {
        const model = await addon.createModel({ config: spec.config, tensors: spec.tensors, device: 'cpu', threads: 1 });
        const V = spec.config.vocabSize;
        const tokens = Int32Array.from([1, 5, 2, 7].map((t) => t % V));
        const { edgeLogProbs } = await model.forward({ tokens, parents: Int32Array.from([-1, 0, 1, 2]), edgeRows: Int32Array.from([0, 1, 2, 3]), edgeTokens: Int32Array.from([3, 4, 0, 1].map((t) => t % V)) });
        model.dispose();
        results.push(edgeLogProbs.length === 4 ? 'ok' : 'wrong length');
      } catch (error) {
        results.push('refused ' + (error.code ?? '') + ': ' + error.message);
      }
    }
    process.stdout.write(JSON.stringify(results));
  `;
  const input = JSON.stringify(specs.map((s) => ({ config: s.config, tensors: s.tensors })));
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', child], { input, encoding: 'utf8', timeout: 60_000, maxBuffer: 16 * 2 ** 20 });
  let results: string[] = [];
  try {
    results = JSON.parse(run.stdout) as string[];
  } catch {
    results = [];
  }
  return { status: run.status, signal: run.signal, results, stderr: run.stderr };
}

function report(name: string, outcome: Outcome, total: number): void {
  expect(outcome.problems.slice(0, 10)).toEqual([]);
  expect(outcome.loaded + outcome.refused).toBe(total);
  // Both kinds must occur, or the mutations are too weak or too strong to mean anything.
  expect(outcome.refused).toBeGreaterThan(total / 4);
  expect(outcome.loaded).toBeGreaterThan(total / 50);
  expect(outcome.slowest).toBeLessThan(SLOW_CASE_MS);
  process.stdout.write(`fuzz ${name}: ${total} cases, ${outcome.loaded} loaded, ${outcome.refused} refused, most CPU for one case ${outcome.slowest.toFixed(1)} ms\n`);
}

const newOutcome = (): Outcome => ({ loaded: 0, refused: 0, problems: [], slowest: 0, survivors: [] });
const ggufOutcome = newOutcome();
const hfSurvivors: ModelSpec[] = [];
let rssStart = 0;
let rssPeak = 0;
const sampleRss = () => {
  rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
};

describe('fuzzing the loaders', () => {
  beforeAll(() => {
    rssStart = process.memoryUsage.rss();
  });

  it(`a sweep of awkward values over every GGUF header field, and ${CASES.gguf} random GGUF mutants, load or throw a typed error naming the file`, async () => {
    const bases = [
      encodeGgufModel(makeTinyModel({ ...small, seed: 1 }), { alignment: 32, tokenizer: { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': Array.from({ length: 32 }, (_, i) => `t${i}`), 'tokenizer.ggml.token_type': gguf.array('i32', Array(32).fill(1)) } }),
      encodeGgufModel(makeTinyModel({ hidden: 32, heads: 2, kvHeads: 1, intermediate: 32, vocab: 24, tied: true, layers: 1, seed: 2 }), { type: 'Q4_1' }),
      encodeGgufModel(makeTinyModel({ bias: true, layers: 1, seed: 3, ropeTheta: 500000, heads: 2, kvHeads: 1, headDim: 16, hidden: 32, intermediate: 32, vocab: 24, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }), { type: 'Q8_0' }),
    ];
    const path = join(dir, 'mutant.gguf');
    const check = async (bytes: Buffer, label: string) => {
      await writeFile(path, bytes);
      const spec = await attempt(path, path, ggufOutcome, label);
      if (spec && ggufOutcome.survivors.length < NATIVE_SURVIVORS.gguf) {
        const keep = join(dir, `survivor-${ggufOutcome.survivors.length}.gguf`);
        await copyFile(path, keep);
        ggufOutcome.survivors.push(await loadModelSpec(keep));
      }
    };
    // Every structural field of the metadata and of the first tensors, set to every awkward value.
    const sweep = bases[0];
    const firstTensors = new Set(['token_embd.weight', 'blk.0.attn_norm.weight', 'blk.0.attn_q.weight']);
    const tensorOf = (label: string) => (label.startsWith('tensor ') ? label.slice('tensor '.length, -' name'.length) : label);
    const isTensorField = (label: string) => /^(token_embd|output_norm|output|blk\.\d+\.[a-z_]+)\.weight$/.test(tensorOf(label));
    const swept = sweep.fields.filter((f) => f.role !== 'value' && (!isTensorField(f.label) || firstTensors.has(tensorOf(f.label))));
    let cases = 0;
    for (const f of swept)
      for (const v of f.size === 8 ? [0n, 1n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(sweep.bytes.length), BigInt(sweep.bytes.length - sweep.dataOffset)] : [0, 1, 5, 13, 2 ** 31, 2 ** 32 - 1]) {
        const bytes = Buffer.from(sweep.bytes);
        if (f.size === 8) bytes.writeBigUInt64LE(v as bigint, f.pos);
        else bytes.writeUInt32LE(v as number, f.pos);
        await check(bytes, `sweep ${f.role} ${f.label} = ${v}`);
        cases++;
      }
    expect(swept.filter((f) => isTensorField(f.label)).length).toBe(3 + 2 * 5 + 4);
    expect(cases).toBeGreaterThan(300);
    for (let i = 0; i < CASES.gguf; i++) {
      const { bytes, how } = mutateGguf(pick(bases));
      await check(bytes, `gguf #${i} (${how})`);
      if (i % 50 === 0) sampleRss();
    }
    report('gguf', ggufOutcome, CASES.gguf + cases);
  });

  it(`${CASES.safetensors} mutated safetensors files and ${CASES.config} mutated configs load or throw a typed error naming the file`, async () => {
    const model = makeTinyModel({ ...small, seed: 4 });
    const tensors = [...model.weights].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
    const bases = [encodeSafetensors(tensors, { metadata: { format: 'pt' } }), encodeSafetensors(tensors, { dtype: 'BF16' })];
    const hfDir = join(dir, 'hf');
    await writeHfDirectory(hfDir, model);
    const weights = join(hfDir, 'model.safetensors');
    const stOutcome = newOutcome();
    for (let i = 0; i < CASES.safetensors; i++) {
      const base = pick(bases);
      const { bytes, how } = mutateSafetensors(base.bytes, base.headerLength);
      await writeFile(weights, bytes);
      const spec = await attempt(hfDir, weights, stOutcome, `safetensors #${i} (${how})`);
      if (spec && hfSurvivors.length < NATIVE_SURVIVORS.hf / 2) {
        const keep = join(dir, `hf-survivor-st-${i}`);
        await mkdir(keep);
        await writeFile(join(keep, 'config.json'), await readFile(join(hfDir, 'config.json')));
        await writeFile(join(keep, 'model.safetensors'), bytes);
        hfSurvivors.push(await loadModelSpec(keep));
      }
      if (i % 50 === 0) sampleRss();
    }
    report('safetensors', stOutcome, CASES.safetensors);

    await writeFile(weights, bases[0].bytes);
    const configPath = join(hfDir, 'config.json');
    const baseConfig = hfConfigJson(model.config);
    const cfgOutcome = newOutcome();
    for (let i = 0; i < CASES.config; i++) {
      const { text, how } = mutateConfig(baseConfig);
      await writeFile(configPath, text);
      const spec = await attempt(hfDir, hfDir, cfgOutcome, `config #${i} (${how})`);
      if (spec && hfSurvivors.length < NATIVE_SURVIVORS.hf) {
        const keep = join(dir, `hf-survivor-cfg-${i}`);
        await mkdir(keep);
        await writeFile(join(keep, 'config.json'), text);
        await writeFile(join(keep, 'model.safetensors'), bases[0].bytes);
        hfSurvivors.push(await loadModelSpec(keep));
      }
      if (i % 50 === 0) sampleRss();
    }
    report('config.json', cfgOutcome, CASES.config);
    sampleRss();
    process.stdout.write(`fuzz: resident memory grew by at most ${((rssPeak - rssStart) / 2 ** 20).toFixed(0)} MiB\n`);
    expect(rssPeak - rssStart).toBeLessThan(MAX_RSS_GROWTH);
  });

  it('the engine loads and runs every mutant the loaders accepted, or refuses one whose data turned non-finite, naming the tensor; never crashes', () => {
    const specs = [...ggufOutcome.survivors, ...hfSurvivors];
    expect(ggufOutcome.survivors.length).toBeGreaterThan(20);
    expect(hfSurvivors.length).toBeGreaterThan(5);
    const run = loadNatively(specs);
    expect({ status: run.status, signal: run.signal, stderr: run.stderr.slice(0, 2000) }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(run.results).toHaveLength(specs.length);
    // A flipped byte in tensor data can make a value NaN or Inf: the only refusal allowed, and it must name the file and the tensor.
    const nonFinite = (r: string, path: string) => r.startsWith(`refused FORMAT: ${path}`) && /: tensor '[^']+' holds a non-finite value \(NaN or Inf\) at \[/.test(r);
    const refused = run.results.flatMap((r, i) => (r === 'ok' || nonFinite(r, specs[i].path) ? [] : [`${specs[i].path}: ${r}`]));
    expect(refused).toEqual([]);
    expect(run.results.filter((r) => r === 'ok').length).toBeGreaterThan(10);
  });
});
