/** LoRA adapters on disk: Hugging Face PEFT's layout, llama.cpp's GGUF LoRA, and merging one into its base model. */
export {
  saveAdapter,
  loadAdapter,
  readAdapterConfig,
  readAdapterWeights,
  peftConfig,
  projectionShapes,
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  type SaveAdapterOptions,
  type LoadAdapterOptions,
  type PeftAdapterConfig,
  type AdapterWeights,
} from './peft.js';
export { mergeAdapter, type MergeOptions, type MergeResult } from './merge.js';
export { writeGgufLora, readGgufLora, loadGgufLoraAdapter, ggufLoraBase, type GgufLoraBase, type WriteGgufLoraOptions } from './gguf-lora.js';
