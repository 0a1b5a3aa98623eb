/**
 * Loading models: the default model, a GGUF file, a Hugging Face directory or hub id, or random
 * weights of a known shape (for throughput at real sizes without a download).
 */
import { InvalidArgumentError, nativeCall } from '../errors.js';
import { native, type EngineConfig, type NativeModel, type TensorSource } from '../native.js';
import { tokenizerFromGguf, tokenizerFromHfDirectory } from '../tokenizer/index.js';
import { Model } from './model.js';
import { initDtype, initTensorSources, preset } from './presets.js';
import { resolveModel, type ResolveOptions } from './resolve.js';
import { loadModelSpec } from './tensors.js';

/** Where a model runs: 'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'. */
export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/** How loadModel finds, fetches and places a model. */
export interface LoadModelOptions extends ResolveOptions {
  /** Where to run: 'auto' (default) takes the GPU when the CUDA backend and a device are there. */
  device?: Device;
  /**
   * CPU threads (default: all cores, or DIFFUSE_THREADS). The thread pool is the process's:
   * each CPU model sets it as it is loaded, and the last one loaded decides for all.
   */
  threads?: number;
  /**
   * 'stored' (default): weight matrices stay in the file's type (bf16, f16, GGUF blocks) and the
   * CPU widens them inside its GEMM, bit-identical to 'f32', which widens everything at load.
   */
  weights?: 'stored' | 'f32';
  /**
   * Variables for every render of the model's chat template, as transformers'
   * chat_template_kwargs: e.g. { enable_thinking: false } for Qwen3 (whose template otherwise
   * lets the model think first). Absent: the template's own defaults, as in transformers.
   */
  chatTemplateKwargs?: Record<string, unknown>;
}

/** Random weights of a known shape: a preset (see presets.ts: llama-2-7b, llama-3.1-8b, gemma-7b, gemma-2-9b, qwen2.5-7b, …) or a config. */
export interface RandomModelSpec {
  config: string | EngineConfig;
  randomInit: true;
  /** Seeds the weights (default 0); the same seed gives the same weights on every device. */
  seed?: number;
  /** Storage of the matrices: 'f32' (default), 'bf16', 'f16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k' or 'q6_k' (values rounded to it as llama.cpp rounds; K-quant rows are whole 256-value blocks). */
  dtype?: string;
}

/** The device 'auto' stands for on this machine. */
export function pickDevice(device: Device = 'auto'): string {
  if (device !== 'auto') return device;
  return native().cudaStatus().available ? 'cuda' : 'cpu';
}

/** @internal */
export async function createNativeModel(config: EngineConfig, tensors: TensorSource[], options: LoadModelOptions): Promise<NativeModel> {
  if (options.weights !== undefined && options.weights !== 'stored' && options.weights !== 'f32')
    throw new InvalidArgumentError(`weights must be 'stored' or 'f32', got '${String(options.weights)}'`);
  return nativeCall(() =>
    native().createModel({ config, tensors, device: pickDevice(options.device), threads: options.threads, weights: options.weights }),
  );
}

/**
 * Loads a model: 'smollm2-135m-instruct' (the default, fetched on first use), a path to a .gguf
 * file or a Hugging Face model directory, a hub id 'org/name' ('org/name:FILE.gguf'), or random
 * weights: { config: 'llama-2-13b', randomInit: true } (such a model has no tokenizer).
 */
export async function loadModel(spec: string | RandomModelSpec, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof spec !== 'string') {
    if (spec?.randomInit !== true) throw new InvalidArgumentError('loadModel(spec) takes a model name, path or hub id, or { config, randomInit: true }');
    if (options.chatTemplateKwargs && Object.keys(options.chatTemplateKwargs).length > 0)
      throw new InvalidArgumentError('a random-init model has no tokenizer or chat template, so chatTemplateKwargs cannot apply');
    const config = typeof spec.config === 'string' ? preset(spec.config) : spec.config;
    const nativeModel = await createNativeModel(config, initTensorSources(config, { seed: spec.seed ?? 0, dtype: initDtype(spec.dtype ?? 'f32') }), options);
    return new Model(`random:${typeof spec.config === 'string' ? spec.config : 'config'}`, config, nativeModel, undefined);
  }
  const source = await resolveModel(spec, options);
  const files = await loadModelSpec(source.format === 'gguf' ? source.path : source.dir);
  const tokenizer = files.gguf ? tokenizerFromGguf(files.gguf) : await tokenizerFromHfDirectory(files.path);
  if (options.chatTemplateKwargs) tokenizer.setChatTemplateKwargs(options.chatTemplateKwargs);
  const nativeModel = await createNativeModel(files.config, files.tensors, options);
  return new Model(spec, files.config, nativeModel, tokenizer);
}
