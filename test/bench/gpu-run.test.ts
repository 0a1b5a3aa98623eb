/**
 * bench/gpu/run.sh's staging, on this machine with no GPU: a fake nvidia-smi and a fake check
 * program stand in for the device, so what is tested is the script's own logic -- each stage
 * under its limit, a hang cut off and recorded, later stages still run or are skipped for want
 * of time, results copied to $OUT after every stage, clear refusals.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const script = resolve('bench/gpu/run.sh');
let dir: string;

interface StageRecord {
  stage: number;
  name: string;
  status: string;
  exit_code: number;
  seconds: number;
}

/** A fake device: nvidia-smi naming an H200, and a check program whose parts do `behaviour`. */
function fakeDevice(behaviour: { checks: string; bench: string; steps: string }): { env: NodeJS.ProcessEnv; out: string; results: string } {
  const bin = join(dir, 'bin');
  const build = join(dir, 'build');
  mkdirSync(bin, { recursive: true });
  mkdirSync(build, { recursive: true });
  writeFileSync(join(bin, 'nvidia-smi'), '#!/bin/sh\necho "NVIDIA H200, 580.159.03, 143771 MiB, 9.0"\n');
  // Each part does what `behaviour` says, with $out its --out folder.
  writeFileSync(
    join(build, 'diffuse_cuda_check'),
    `#!/bin/bash
part=$1; out=
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
case "$part" in
  --checks-only) ${behaviour.checks} ;;
  --bench-only) ${behaviour.bench} ;;
  --steps-only) ${behaviour.steps} ;;
esac
`,
  );
  chmodSync(join(bin, 'nvidia-smi'), 0o755);
  chmodSync(join(build, 'diffuse_cuda_check'), 0o755);
  const out = join(dir, 'out');
  const results = join(dir, 'results');
  return {
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, OUT: out, DIFFUSE_GPU_BUILD: build, DIFFUSE_GPU_RESULTS: results },
    out,
    results,
  };
}

function run(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync('bash', [script, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function stages(results: string): StageRecord[] {
  return JSON.parse(readFileSync(join(results, 'stages.json'), 'utf8')).stages;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diffuse-gpu-run-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('bench/gpu/run.sh stages', () => {
  it('cuts a hanging stage off at its limit, records it, and ships what exists to $OUT', () => {
    const dev = fakeDevice({
      checks: 'echo \'{"checks":1}\' > "$out/NVIDIA-H200-checks.json"; echo hanging; sleep 600',
      bench: 'echo \'{}\' > "$out/NVIDIA-H200-bench.json"',
      steps: 'exit 0',
    });
    const t0 = Date.now();
    const r = run(['--stage', '2', '--stage', '3', '--budget', '7'], dev.env);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(r.status).toBe(2); // the first stage that did not pass
    expect(r.output).toContain('stage limit of');
    const s = stages(dev.results);
    expect(s.map((x) => [x.stage, x.status])).toEqual([
      [2, 'timeout'],
      [3, 'skipped'],
    ]);
    expect(s[0].exit_code).toBe(124);
    const shipped = readdirSync(dev.out).sort();
    expect(shipped).toEqual(['NVIDIA-H200-checks.json', 'gpu-results.tar.gz', 'stages.json']);
    expect(readFileSync(join(dev.results, 'stage-2-checks.log'), 'utf8')).toContain('hanging');
  });

  it('runs the later stages after a failing one and exits with the first failure', () => {
    const dev = fakeDevice({ checks: 'echo one check failed; exit 1', bench: 'echo \'{}\' > "$out/NVIDIA-H200-bench.json"', steps: 'exit 0' });
    const r = run(['--stage', '2', '--stage', '3'], dev.env);
    expect(r.status).toBe(2);
    expect(stages(dev.results).map((x) => [x.stage, x.status, x.exit_code])).toEqual([
      [2, 'failed', 1],
      [3, 'ok', 0],
    ]);
    expect(existsSync(join(dev.out, 'NVIDIA-H200-bench.json'))).toBe(true);
  });

  it('says what is missing: no GPU, no build, a bad stage number', () => {
    const noGpu = run(['--stage', '2'], { ...process.env, PATH: '/usr/bin:/bin', DIFFUSE_GPU_RESULTS: join(dir, 'r') });
    expect(noGpu.status).toBe(3);
    expect(noGpu.output).toMatch(/no NVIDIA GPU here \(nvidia-smi is not on PATH\)/);
    expect(existsSync(join(dir, 'r'))).toBe(false);
    const dev = fakeDevice({ checks: 'exit 0', bench: 'exit 0', steps: 'exit 0' });
    const noBuild = run(['--stage', '2'], { ...dev.env, DIFFUSE_GPU_BUILD: join(dir, 'nothing') });
    expect(noBuild.status).toBe(2);
    expect(noBuild.output).toContain('run stage 1 first');
    expect(run(['--stage', '9'], dev.env).status).toBe(2);
  });

  it('plans all four stages within the 10-minute command, in a dry run that writes nothing here', () => {
    const dev = fakeDevice({ checks: 'exit 0', bench: 'exit 0', steps: 'exit 0' });
    const r = run(['--dry-run'], dev.env);
    expect(r.status).toBe(0);
    const limits = [...r.output.matchAll(/\[dry run, limit (\d+)s\]/g)].map((m) => Number(m[1]));
    expect(limits.length).toBe(7); // build; checks; bench, steps; reference, ours, compare
    expect(limits.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(540);
    expect(r.output).toMatch(/--checks-only/);
    expect(r.output).toMatch(/peft_side\.py reference/);
    expect(existsSync(dev.results)).toBe(false);
  });
});
