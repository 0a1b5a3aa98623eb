import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { packageRoot } from '../../lib/native.js';

/**
 * The SIMD kernels (attention, log-probs, sampling, SwiGLU, the stored-B GEMM, widening) are compiled once per instruction
 * set and dispatched at run time; this process runs the best one. DIFFUSE_CPU_ISA caps the
 * choice, so the same tests run again, in child processes, on the AVX2 and the generic copies.
 */
const jest = join(packageRoot, 'node_modules', 'jest', 'bin', 'jest.js');
const files = ['test/ops/attention.test.ts', 'test/ops/logprobs.test.ts', 'test/ops/sampling.test.ts', 'test/ops/swiglu.test.ts', 'test/ops/gemm-stored.test.ts', 'test/ops/widen.test.ts'];
// A representative subset keeps this quick: every kernel, forward and backward.
const pattern = 'root-first|shuffled lists, head_dim 16|no keys|vocab 1000|vocab 2053|finite differences|greedy|batched|top-k 6|SwiGLU|^GEMM with a stored B (BF16|Q4_K)|^widenRange';

function runTests(isa: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--experimental-vm-modules', jest, '--ci', '--reporters=default', '-t', pattern, ...files], {
      cwd: packageRoot,
      env: { ...process.env, DIFFUSE_CPU_ISA: isa },
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('the kernels compiled for other instruction sets', () => {
  for (const isa of ['avx2', 'generic'])
    it(`pass the kernel tests on the ${isa} copy`, async () => {
      const { code, output } = await runTests(isa);
      if (code !== 0) throw new Error(`kernel tests failed with DIFFUSE_CPU_ISA=${isa}:\n${output}`);
      expect(output).toMatch(/Tests: +\d+ skipped, [1-9]\d* passed/);
    });
});
