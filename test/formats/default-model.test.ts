/**
 * The real default model end to end: ensureDefaultModel → readGguf → engineConfigFromGguf →
 * tensorSourcesFromGguf → native().createModel → forward(), against log-probabilities from an
 * independent implementation of the same chain.
 *
 * The reference values come from transformers 5.23 loading the same GGUF (its own GGUF reader,
 * dequantisation and Q/K un-permutation) in float32 on CPU:
 *   AutoModelForCausalLM.from_pretrained(dir, gguf_file='SmolLM2-135M-Instruct.Q4_1.gguf', dtype=torch.float32)
 *   log_softmax(model(tensor([[The, Ġcapital, Ġof, ĠFrance, Ġis]])).logits[0].double(), -1)[row, token]
 * The weights are the same Q4_1 values in both, so only f32 summation order separates them
 * (measured: 1.5e-5 at most).
 */
import { readGguf } from '../../lib/formats/gguf.js';
import { engineConfigFromGguf } from '../../lib/model/config.js';
import { ensureDefaultModel } from '../../lib/model/default-model.js';
import { Progress } from '../../lib/progress.js';
import { tensorSourcesFromGguf } from '../../lib/model/tensors.js';
import { native, type NativeBatch, type TensorSource } from '../../lib/native.js';

const prompt = ['The', 'Ġcapital', 'Ġof', 'ĠFrance', 'Ġis'];
/** (row of the prompt, next token, transformers' log-probability). */
const reference: [number, string, number][] = [
  [4, 'ĠParis', -0.25808206115183063],
  [4, 'ĠLondon', -4.384370475153295],
  [3, 'Ġis', -0.4509533985365477],
  [2, 'ĠFrance', -2.4386627406931183],
];

describe('the default model (SmolLM2-135M-Instruct Q4_1)', () => {
  it('loads with the right config and gives transformers’ log-probabilities', async () => {
    const path = await ensureDefaultModel({ progress: new Progress({ mode: 'silent' }) });
    const file = await readGguf(path);
    const config = engineConfigFromGguf(file);
    expect(config).toEqual({
      hiddenSize: 576,
      intermediateSize: 1536,
      numLayers: 30,
      numHeads: 9,
      numKvHeads: 3,
      headDim: 64,
      vocabSize: 49152,
      rmsNormEps: Math.fround(1e-5),
      ropeTheta: 100000,
      ropeScaling: { type: 'none' },
      tieWordEmbeddings: true,
      attentionBias: false,
    });
    const tensors = tensorSourcesFromGguf(file, config);
    expect(tensors).toHaveLength(file.tensors.length);
    const dtypes = (names: RegExp) => new Set(tensors.filter((t) => names.test(t.name)).map((t) => ('dtype' in t ? t.dtype : '')));
    expect(dtypes(/embed_tokens/)).toEqual(new Set(['Q8_0']));
    expect(dtypes(/_proj\.weight$/)).toEqual(new Set(['Q4_1']));
    expect(dtypes(/norm/)).toEqual(new Set(['F32']));

    const vocabulary = file.metadata.get('tokenizer.ggml.tokens') as string[];
    const id = (token: string) => {
      const i = vocabulary.indexOf(token);
      expect(i).toBeGreaterThanOrEqual(0);
      return i;
    };
    const batch: NativeBatch = {
      tokens: Int32Array.from(prompt.map(id)),
      parents: Int32Array.from(prompt.map((_, i) => i - 1)),
      edgeRows: Int32Array.from(reference.map(([row]) => row)),
      edgeTokens: Int32Array.from(reference.map(([, token]) => id(token))),
    };
    const logProbs = async (sources: TensorSource[]) => {
      const model = await native().createModel({ config, tensors: sources, device: 'cpu' });
      try {
        // The Q4_1 matrices stay in their blocks (about 5 bits a weight), not 540 MB of f32.
        expect(model.info().weightBytes).toBeGreaterThan(80e6);
        expect(model.info().weightBytes).toBeLessThan(120e6);
        return (await model.forward(batch)).edgeLogProbs;
      } finally {
        model.dispose();
      }
    };

    const ours = await logProbs(tensors);
    reference.forEach(([, token, expected], e) => {
      expect(Number.isFinite(ours[e])).toBe(true);
      expect({ token, logp: ours[e] }).toEqual({ token, logp: expect.closeTo(expected, 3) });
    });
    // Without the un-permutation the same file gives visibly different answers.
    const scrambled = await logProbs(tensors.map((t) => ({ ...t, unpermuteHeads: 0 })));
    expect(Math.max(...reference.map(([, , expected], e) => Math.abs(scrambled[e] - expected)))).toBeGreaterThan(0.5);
  });
});
