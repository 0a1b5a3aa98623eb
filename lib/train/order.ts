/**
 * The order prompts are visited in during one pass: a Fisher–Yates shuffle whose draws come
 * from the engine's counter-based generator (native/engine/random.h: splitmix64 of
 * (seed, stream, counter)), so pass k's order is a pure function of (seed, k) — a resumed run
 * needs no generator state, only the pass number.
 */
const MASK64 = (1n << 64n) - 1n;
/** The stream of shuffle draws: ASCII "shuffle". */
const SHUFFLE_STREAM = 0x73687566666c65n;

function splitmix64(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & MASK64;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return x ^ (x >> 31n);
}

/** The engine's uniform_from_counter: a double in [0, 1) from 53 bits of the hash. */
export function uniformFromCounter(seed: number, stream: bigint, counter: number): number {
  const x = splitmix64(splitmix64(splitmix64(BigInt(seed)) ^ stream) ^ BigInt(counter));
  return Number(x >> 11n) / 9007199254740992;
}

/** The permutation of 0..n−1 visited in pass `pass` (0-based) of a run seeded with `seed`. */
export function passOrder(seed: number, pass: number, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  const stream = SHUFFLE_STREAM ^ BigInt(pass);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniformFromCounter(seed, stream, i) * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}
