import { spawnSync } from 'node:child_process';

import { native, packageRoot } from '../../lib/native.js';
import { allGemmCases, type GemmCaseResult, runGemmCases } from './gemm-cases.js';

// fp32 against float64 on random inputs in [-1, 1): at most 400 terms per sum.
const TOLERANCE = 1e-5;

function expectAllWithin(results: GemmCaseResult[]): void {
  const failed = results.filter((r) => !(r.error <= TOLERANCE));
  expect(failed).toEqual([]);
  expect(results).toHaveLength(allGemmCases.length);
}

describe('CPU sgemm', () => {
  it('reports the instruction set it runs on', () => {
    expect(['avx512', 'avx2', 'generic']).toContain(native().gemmIsa());
  });

  it('matches a float64 reference on every path, edge and K extension, and on random shapes', () => {
    expectAllWithin(runGemmCases());
  });

  it('gives the same answers with one thread and with more threads than cores', () => {
    const addon = native();
    const threads = addon.threadCount();
    try {
      for (const n of [1, 3]) {
        addon.setThreads(n);
        expectAllWithin(runGemmCases(allGemmCases, 7));
      }
    } finally {
      addon.setThreads(threads);
    }
  });

  // The instruction set is fixed per process, so the other kernels run in child processes.
  it.each(['avx2', 'generic'])('matches the reference with the %s kernels', (isa) => {
    const script =
      "import { native } from './lib/native.ts'; import { runGemmCases } from './test/ops/gemm-cases.ts';" +
      'console.log(JSON.stringify({ isa: native().gemmIsa(), results: runGemmCases(undefined, 3) }));';
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: packageRoot,
      env: { ...process.env, DIFFUSE_CPU_ISA: isa },
      encoding: 'utf8',
    });
    expect(child.stderr).toBe('');
    const { isa: used, results } = JSON.parse(child.stdout) as { isa: string; results: GemmCaseResult[] };
    // avx2 is honoured only where the processor has it; generic always is.
    expect(isa === 'generic' ? ['generic'] : ['avx2', 'generic']).toContain(used);
    expectAllWithin(results);
  });
});
