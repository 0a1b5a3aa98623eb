import { native } from '../../lib/native.js';
import { embedding, Rng } from '../reference/ops.js';

const ops = native().ops('cpu');

describe('embedding gather', () => {
  it('copies the table rows of the tokens, repeats and ends included', () => {
    const rng = new Rng(1);
    const vocab = 1000;
    const dim = 72;
    const table = rng.normals(vocab * dim);
    const tokens = Int32Array.from([0, 999, 5, 5, 123, 0, ...Array.from({ length: 200 }, () => rng.int(vocab))]);
    const got = ops.embeddingForward(tokens, table, dim);
    expect(Array.from(got)).toEqual(Array.from(embedding(tokens, table, dim)));
  });
});
