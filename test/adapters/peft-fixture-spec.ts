/** What the PEFT fixture (tools/reference/peft_fixture.ts) was made from, shared with its test. */
export const peftFixture = {
  /** The suite's tiny random Llama. */
  model: { seed: 41, hidden: 16, heads: 4, kvHeads: 2, intermediate: 24, vocab: 50, layers: 2, tied: false },
  /** Our adapter: createAdapter(adapter), then randomiseB(bSeed, bScale) so it changes the outputs. */
  ours: { adapter: { rank: 2, alpha: 4, seed: 5 }, bSeed: 6, bScale: 0.4 },
  /** PEFT's own adapter: get_peft_model with these, A and B random, bf16. */
  peft: { r: 2, lora_alpha: 3, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: true, seed: 0 },
  /** [prompt ids, target ids] pairs, scored as Σ log p(target | prompt). */
  sequences: [
    [[1, 5, 9, 3], [7, 2]],
    [[1, 5, 9, 3], [7, 11, 2]],
    [[1, 5, 9, 3], [30, 2]],
    [[4, 44, 8], [12, 13, 14, 2]],
  ] as [number[], number[]][],
};
