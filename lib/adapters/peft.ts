/**
 * LoRA adapters in Hugging Face PEFT's layout, so PEFT, transformers and vLLM load what we
 * train and we load what they train:
 *
 *   adapter_config.json        { peft_type: "LORA", task_type: "CAUSAL_LM", r, lora_alpha,
 *                                target_modules, lora_dropout: 0, bias: "none", … }
 *   adapter_model.safetensors  base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_A.weight [r, in]
 *                              … .lora_B.weight [out, r]
 *
 * PEFT computes y = x Wᵀ + (lora_alpha / r) · (x Aᵀ) Bᵀ, as the engine does; with
 * `use_rslora` the scale is lora_alpha / √r, which we take as an alpha of lora_alpha · √r.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { InvalidArgumentError, ModelFormatError, NotFoundError, UnsupportedError } from '../errors.js';
import { readSafetensors } from '../formats/safetensors.js';
import { makeDirectory, writeFilesAtomically } from '../atomic-write.js';
import { safetensorsContents, type SafetensorsWriteDtype } from '../formats/safetensors-writer.js';
import { allLoraModules, moduleBlock, type Adapter, type AdapterTensor, type LoraModule } from '../model/adapter.js';
import type { Model } from '../model/model.js';
import type { EngineConfig } from '../native.js';
import { readTensorsF32 } from './tensor-file.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** How an adapter is saved: the stored dtype and the base model named in adapter_config.json. */
export interface SaveAdapterOptions {
  /** `base_model_name_or_path`: the model the adapter was trained on (default null). */
  baseModel?: string | null;
  /** How the matrices are stored (default F32, the training precision). */
  dtype?: SafetensorsWriteDtype;
}

/** adapter_config.json for an adapter: the keys every PEFT version since 0.7 reads, and no others. */
export function peftConfig(adapter: Pick<Adapter, 'rank' | 'alpha' | 'targetModules'>, baseModel: string | null = null): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    revision: null,
    r: adapter.rank,
    lora_alpha: adapter.alpha,
    lora_dropout: 0,
    target_modules: allLoraModules.filter((m) => adapter.targetModules.includes(m)),
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    use_rslora: false,
    use_dora: false,
  };
}

/** Every A and B matrix of the adapter with its PEFT key, in key order. */
export function adapterTensorsByKey(adapter: Adapter): AdapterTensor[] {
  return adapter.tensors().sort((a, b) => (a.peftKey < b.peftKey ? -1 : a.peftKey > b.peftKey ? 1 : 0));
}

/**
 * Saves an adapter as a PEFT directory (created if needed). The weights and the config are
 * written to temporary files and renamed into place together, so a failed save (a full disk, a
 * read-only directory) leaves an adapter already there as it was.
 */
export async function saveAdapter(adapter: Adapter, dir: string, options: SaveAdapterOptions = {}): Promise<void> {
  const dtype = options.dtype ?? 'F32';
  if (!['F32', 'F16', 'BF16'].includes(dtype)) throw new InvalidArgumentError(`adapter dtype must be F32, F16 or BF16, not ${String(dtype)}`);
  await makeDirectory(dir);
  const tensors = adapterTensorsByKey(adapter);
  const config = JSON.stringify(peftConfig(adapter, options.baseModel ?? null), null, 2) + '\n';
  await writeFilesAtomically([
    {
      path: join(dir, ADAPTER_WEIGHTS_FILE),
      produce: safetensorsContents(
        tensors.map((t) => ({ name: t.peftKey, shape: t.shape, data: () => adapter.getTensor(t.name) })),
        { dtype, metadata: { format: 'pt' } },
      ),
    },
    { path: join(dir, ADAPTER_CONFIG_FILE), produce: (write) => write(Buffer.from(config, 'utf8')) },
  ]);
}

/** What an adapter_config.json says, checked, in the engine's terms. */
export interface PeftAdapterConfig {
  file: string;
  rank: number;
  /** The engine's alpha: lora_alpha, or lora_alpha · √r for rsLoRA (scale α/√r). */
  alpha: number;
  /** The modules the config lists, or undefined when it gives a regular expression (the weights then say). */
  targetModules?: LoraModule[];
  baseModel: string | null;
  dropout: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || (Array.isArray(v) && v.length === 0) || (isObject(v) && Object.keys(v).length === 0);
}

/** Reads and checks a PEFT adapter_config.json; anything the engine cannot apply is an UnsupportedError saying why. */
export async function readAdapterConfig(dir: string): Promise<PeftAdapterConfig> {
  const file = join(dir, ADAPTER_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new NotFoundError(`${file} not found; give a directory holding a PEFT LoRA adapter (adapter_config.json and adapter_model.safetensors)`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ModelFormatError(file, undefined, `is not valid JSON (${(error as Error).message})`);
  }
  if (!isObject(raw)) throw new ModelFormatError(file, undefined, 'is not a JSON object');
  const c = raw;
  const unsupported = (what: string) => new UnsupportedError(`${file}: ${what}; diffuse applies plain LoRA (y = x Wᵀ + (α/r)·x Aᵀ Bᵀ) to every layer of the listed projections`);
  if (c.peft_type !== 'LORA') throw unsupported(`peft_type is ${JSON.stringify(c.peft_type)}, not "LORA"`);
  const rank = c.r;
  if (typeof rank !== 'number' || !Number.isSafeInteger(rank) || rank < 1) throw new ModelFormatError(file, 'r', `must be a whole number ≥ 1, not ${JSON.stringify(rank)}`);
  const loraAlpha = c.lora_alpha ?? 8;
  if (typeof loraAlpha !== 'number' || !(loraAlpha > 0) || !Number.isFinite(loraAlpha)) throw new ModelFormatError(file, 'lora_alpha', `must be a positive number, not ${JSON.stringify(loraAlpha)}`);
  if (c.use_dora === true) throw unsupported('use_dora is true (DoRA adds a magnitude vector per layer)');
  if ((c.bias ?? 'none') !== 'none') throw unsupported(`bias is ${JSON.stringify(c.bias)} (trained biases)`);
  if (c.fan_in_fan_out === true) throw unsupported('fan_in_fan_out is true (GPT-2 style Conv1D weights)');
  if (!isEmpty(c.modules_to_save)) throw unsupported(`modules_to_save lists ${JSON.stringify(c.modules_to_save)} (fully trained modules)`);
  if (!isEmpty(c.rank_pattern) || !isEmpty(c.alpha_pattern)) throw unsupported('rank_pattern or alpha_pattern is set (a rank or alpha per module)');
  if (!isEmpty(c.layer_replication)) throw unsupported('layer_replication is set');
  const dropout = c.lora_dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) throw new ModelFormatError(file, 'lora_dropout', `must be a number in [0, 1), not ${JSON.stringify(dropout)}`);

  let targetModules: LoraModule[] | undefined;
  const listed = c.target_modules;
  if (Array.isArray(listed)) {
    const unknown = listed.filter((m) => typeof m !== 'string' || !allLoraModules.includes(m.split('.').pop() as LoraModule));
    if (unknown.length > 0) throw unsupported(`target_modules lists ${unknown.map((m) => JSON.stringify(m)).join(', ')}, which are not among ${allLoraModules.join(', ')}`);
    targetModules = allLoraModules.filter((m) => listed.some((x) => (x as string).split('.').pop() === m));
  } else if (typeof listed !== 'string') {
    throw new ModelFormatError(file, 'target_modules', `must be a list of module names or a regular expression, not ${JSON.stringify(listed)}`);
  }
  const baseModel = typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : null;
  return { file, rank, alpha: c.use_rslora === true ? loraAlpha * Math.sqrt(rank) : loraAlpha, targetModules, baseModel, dropout };
}

const KEY = /^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$/;

/** [out, in] of each adaptable projection of a model. */
export function projectionShapes(config: EngineConfig): Record<LoraModule, [number, number]> {
  const d = config.hiddenSize, q = config.numHeads * config.headDim, kv = config.numKvHeads * config.headDim, I = config.intermediateSize;
  return {
    q_proj: [q, d],
    k_proj: [kv, d],
    v_proj: [kv, d],
    qkv_proj: [q + 2 * kv, d],
    o_proj: [d, q],
    gate_proj: [I, d],
    up_proj: [I, d],
    gate_up_proj: [2 * I, d],
    down_proj: [d, I],
  };
}

/** An adapter's matrices as read from its directory, checked against a model's shapes. */
export interface AdapterWeights {
  config: PeftAdapterConfig;
  /** The safetensors file. */
  file: string;
  /** The modules with matrices, in the engine's order. */
  modules: LoraModule[];
  /** Values by canonical PEFT key (base_model.model.model.layers.{i}.{block}.{module}.lora_{A|B}.weight), widened to f32. */
  tensors: Map<string, Float32Array>;
}

/** The canonical PEFT key of one matrix. */
export function canonicalKey(layer: number, module: LoraModule, matrix: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${moduleBlock(module)}.${module}.lora_${matrix}.weight`;
}

/**
 * Reads a PEFT LoRA adapter directory (stored F32, F16 or BF16), checking the rank, every shape
 * and every module against the model `config` (named `modelName` in messages).
 */
export async function readAdapterWeights(dir: string, config: EngineConfig, modelName: string): Promise<AdapterWeights> {
  const adapterConfig = await readAdapterConfig(dir);
  const weights = await readSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  const shapes = projectionShapes(config);
  const rank = adapterConfig.rank;
  const found = new Map<string, string>(); // canonical key -> key in the file
  const modules = new Set<LoraModule>();
  for (const key of weights.tensors.keys()) {
    const m = KEY.exec(key);
    const module = m?.[3] as LoraModule | undefined;
    if (!m || !allLoraModules.includes(module!) || m[2] !== moduleBlock(module!))
      throw new UnsupportedError(`${weights.path}: tensor '${key}' is not a LoRA matrix of a projection diffuse knows (${allLoraModules.join(', ')}); diffuse cannot apply it`);
    const layer = Number(m[1]);
    if (layer >= config.numLayers)
      throw new ModelFormatError(weights.path, `tensor '${key}'`, `is for layer ${layer}, but ${modelName} has ${config.numLayers} layers; the adapter was trained for another model`);
    const [out, inF] = shapes[module!];
    const want = m[4] === 'A' ? [rank, inF] : [out, rank];
    const shape = weights.tensors.get(key)!.shape;
    if (shape.join() !== want.join())
      throw new ModelFormatError(
        weights.path,
        `tensor '${key}'`,
        `has shape [${shape.join(', ')}], but r = ${rank} (${adapterConfig.file}) on ${modelName} needs [${want.join(', ')}]; the adapter was trained for another model or its config does not match its weights`,
      );
    modules.add(module!);
    found.set(canonicalKey(layer, module!, m[4] as 'A' | 'B'), key);
  }
  if (modules.size === 0) throw new ModelFormatError(weights.path, undefined, 'holds no LoRA matrices');
  if (adapterConfig.targetModules) {
    const missing = [...modules].filter((m) => !adapterConfig.targetModules!.includes(m));
    if (missing.length > 0) throw new ModelFormatError(adapterConfig.file, 'target_modules', `does not list ${missing.join(', ')}, whose matrices ${weights.path} holds`);
  }
  for (const [canonical, key] of found) {
    const partner = canonical.replace(/lora_([AB])/, (_, x: string) => (x === 'A' ? 'lora_B' : 'lora_A'));
    if (!found.has(partner)) throw new ModelFormatError(weights.path, `tensor '${key}'`, `has no ${partner.includes('lora_A') ? 'lora_A' : 'lora_B'} partner`);
  }
  const values = await readTensorsF32(weights, [...found.values()]);
  return {
    config: adapterConfig,
    file: weights.path,
    modules: allLoraModules.filter((m) => modules.has(m)),
    tensors: new Map([...found].map(([canonical, key]) => [canonical, values.get(key)!])),
  };
}

/** How an adapter is loaded. */
export interface LoadAdapterOptions {
  /** Called for each thing worth knowing that does not stop the load (default: ignore). */
  warn?: (message: string) => void;
}

/**
 * Loads a PEFT LoRA adapter (ours or one PEFT wrote) onto `model`. Layers the adapter leaves
 * out (PEFT's layers_to_transform) get A = B = 0: no change, and no gradient either.
 */
export async function loadAdapter(model: Model, dir: string, options: LoadAdapterOptions = {}): Promise<Adapter> {
  return adapterFromWeights(model, await readAdapterWeights(dir, model.config, model.spec), dir, options);
}

/** Puts matrices read from `source` (a PEFT directory or a GGUF LoRA) onto `model` as a new adapter. */
export async function adapterFromWeights(model: Model, weights: AdapterWeights, source: string, options: LoadAdapterOptions = {}): Promise<Adapter> {
  const { config } = weights;
  if (config.dropout > 0) options.warn?.(`${config.file}: lora_dropout ${config.dropout} is ignored; diffuse applies and trains LoRA without dropout`);
  const adapter = await model.createAdapter({ rank: config.rank, alpha: config.alpha, targetModules: weights.modules });
  try {
    const absentLayers = new Set<number>();
    for (const t of adapter.tensors()) {
      const values = weights.tensors.get(t.peftKey);
      if (values === undefined) absentLayers.add(t.layer);
      await adapter.setTensor(t.name, values ?? new Float32Array(t.shape[0] * t.shape[1]));
    }
    if (absentLayers.size > 0) options.warn?.(`${source}: the adapter leaves layers ${[...absentLayers].sort((a, b) => a - b).join(', ')} unadapted for some modules; they stay unchanged`);
  } catch (error) {
    adapter.dispose();
    throw error;
  }
  return adapter;
}
