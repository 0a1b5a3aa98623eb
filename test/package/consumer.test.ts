/**
 * PACKAGE TEST (slow: about 30 s; it runs `npm pack` and `npm ci`). The consumer's path, from
 * outside the repository: `npm pack` the package, add a prebuilt binary under
 * prebuilds/linux-x64/ (as `npm run prebuildify` makes it), install the tarball into an empty
 * directory with `npm ci --offline` (the dependencies come from the npm cache by the lockfile's
 * integrity hashes: no network) and with a PATH that holds node and sh and nothing else — no
 * compiler, no CMake, no make — so the install script must take the prebuilt binary. Then a
 * plain ESM script and a TypeScript file (type-checked strictly against the published .d.ts,
 * skipLibCheck off) load a model, call targetLogProbs and evaluate, and must print what the
 * library gives in-process.
 *
 * The model is the default one (SmolLM2-135M-Instruct) when it is already cached — the test
 * never downloads it — else a tiny random model with a real tokenizer written by the suite; the
 * test's title says which. The prebuilt binary is prebuilds/linux-x64/diffuse.node when
 * `npm run prebuildify` has made one in this checkout, else the addon this checkout built at
 * install (build/Release/diffuse.node, the same Node-API sources) — also when prebuilds/ is older
 * than native/ — again named in the title.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { defaultModelPath, DEFAULT_MODEL } from '../../lib/model/default-model.js';
import { loadModel } from '../../lib/model/load.js';
import { packageRoot } from '../../lib/native.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';

const repoPrebuild = join(packageRoot, 'prebuilds', 'linux-x64', 'diffuse.node');
/** The newest modification time among the native sources. */
const nativeSourcesTime = () =>
  Math.max(...(readdirSync(join(packageRoot, 'native'), { recursive: true }) as string[]).map((f) => statSync(join(packageRoot, 'native', f)).mtimeMs));
// A prebuildify binary older than the sources would test yesterday's engine: take the fresh build then.
const freshPrebuild = existsSync(repoPrebuild) && statSync(repoPrebuild).mtimeMs >= nativeSourcesTime();
const prebuild = freshPrebuild ? repoPrebuild : join(packageRoot, 'build', 'Release', 'diffuse.node');
const haveDefault = existsSync(defaultModelPath()) && existsSync(`${defaultModelPath()}.verified`);
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';

const request = { request: 'Pick a number from 1 to 4. Answer like {1}.', targets: ['{1}', '{2}', '{3}', '{4}'] };

const esmConsumer = `import { loadModel, evaluate, DiffuseError } from 'diffuse';
const request = ${JSON.stringify(request)};
const model = await loadModel(process.argv[2], { device: 'cpu' });
const d = await model.targetLogProbs(request);
const ev = await evaluate(model, [{ name: 'pick', prompts: [request] }], { samples: 3, maxTokens: 6, seed: 1, bootstrap: 10 });
const missing = await loadModel('/nowhere/at/all.gguf').catch((e) => e);
console.log(JSON.stringify({ logprobs: d.targets.map((t) => t.logprob), kl: ev.tasks[0].exact.kl, samples: ev.tasks[0].prompts[0].sampled.n, typed: missing instanceof DiffuseError && missing.code }));
model.dispose();
`;

const tsConsumer = `import { loadModel, evaluate, renderReport, type Evaluation, type TargetDistribution, type TargetRequest } from 'diffuse';
const request: TargetRequest = ${JSON.stringify(request)};
const model = await loadModel(process.argv[2], { device: 'cpu' });
const d: TargetDistribution = await model.targetLogProbs(request);
const ev: Evaluation = await evaluate(model, [{ name: 'pick', prompts: [request] }]);
const html: string = renderReport([{ label: 'base', evaluation: ev }]);
// Internals are not in the published types.
// @ts-expect-error Model.native is internal
void model.native;
const kl: number = ev.tasks[0].exact!.kl;
console.log(JSON.stringify({ logprobs: d.targets.map((t) => t.logprob), kl, html: html.startsWith('<!doctype html>') }));
model.dispose();
`;

/** The consumer's lockfile: the package tarball plus the production entries of ours (their integrity hashes find them in the npm cache). */
function consumerLockfile(tarball: string): object {
  const lock = JSON.parse(readFileSync(join(packageRoot, 'package-lock.json'), 'utf8'));
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8'));
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
  const packages: Record<string, unknown> = {
    '': { name: 'consumer', dependencies: { diffuse: `file:${tarball}` } },
    'node_modules/diffuse': { version: pkg.version, resolved: `file:${tarball}`, integrity, hasInstallScript: true, license: pkg.license, dependencies: pkg.dependencies, bin: pkg.bin, engines: pkg.engines },
  };
  for (const [path, entry] of Object.entries(lock.packages as Record<string, { dev?: boolean; devOptional?: boolean }>))
    if (path !== '' && !entry.dev && !entry.devOptional) packages[path] = entry;
  return { name: 'consumer', lockfileVersion: 3, requires: true, packages };
}

const run = (command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }) =>
  execFileSync(command, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });

(linuxX64 ? describe : describe.skip)(
  `PACKAGE TEST: the packed tarball with a prebuilt binary (${freshPrebuild ? 'from npm run prebuildify' : `the install-time build copied to prebuilds/linux-x64${existsSync(repoPrebuild) ? ', as prebuilds/ is older than native/' : ''}`}), installed offline with no compiler on the PATH, used on ${haveDefault ? DEFAULT_MODEL : 'a tiny random model (the default model is not cached)'}${linuxX64 ? '' : ' (skipped: prebuilds/linux-x64 only)'}`,
  () => {
    let work: string;
    let consumer: string;
    let modelSpec: string;
    let strippedEnv: NodeJS.ProcessEnv;
    let installLog: string;
    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'diffuse-package-'));
      modelSpec = haveDefault ? DEFAULT_MODEL : await writeTinyChatModel(2);
      const npmCli = realpathSync(run('sh', ['-c', 'command -v npm'], { cwd: work }).trim());

      // npm pack runs `prepare` (compiles lib/ to dist/), as publishing does.
      const packed = join(work, run(process.execPath, [npmCli, 'pack', '--silent', '--pack-destination', work], { cwd: packageRoot }).trim().split('\n').pop()!);
      const stage = join(work, 'stage');
      mkdirSync(stage);
      run('tar', ['xzf', packed, '-C', stage], { cwd: work });
      mkdirSync(join(stage, 'package', 'prebuilds', 'linux-x64'), { recursive: true });
      copyFileSync(prebuild, join(stage, 'package', 'prebuilds', 'linux-x64', 'diffuse.node'));
      const tarball = join(work, 'diffuse-prebuilt.tgz');
      run('tar', ['czf', tarball, '-C', stage, 'package'], { cwd: work });

      // A PATH with node and sh only.
      const bin = join(work, 'bin');
      mkdirSync(bin);
      symlinkSync(process.execPath, join(bin, 'node'));
      symlinkSync(realpathSync('/bin/sh'), join(bin, 'sh'));
      strippedEnv = { ...process.env, PATH: bin };
      delete strippedEnv.CXX;
      delete strippedEnv.CC;

      consumer = join(work, 'consumer');
      mkdirSync(consumer);
      writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { diffuse: `file:${tarball}` } }));
      writeFileSync(join(consumer, 'package-lock.json'), JSON.stringify(consumerLockfile(tarball)));
      installLog = run(process.execPath, [npmCli, 'ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: consumer, env: strippedEnv });
    }, 180_000);
    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('installs with no compiler, CMake or make to be found, taking the prebuilt binary', () => {
      for (const tool of ['cmake', 'c++', 'g++', 'gcc', 'cc', 'make']) expect(spawnSync(tool, ['--version'], { env: strippedEnv }).error).toMatchObject({ code: 'ENOENT' });
      expect(installLog).toContain('diffuse: using the prebuilt native addon');
      expect(existsSync(join(consumer, 'node_modules', 'diffuse', 'build'))).toBe(false);
    });

    it('runs from a plain ESM script with the numbers the library gives in-process', async () => {
      writeFileSync(join(consumer, 'consumer.mjs'), esmConsumer);
      const out = JSON.parse(run(process.execPath, ['consumer.mjs', modelSpec], { cwd: consumer, env: strippedEnv }));
      const model = await loadModel(modelSpec, { device: 'cpu' });
      const expected = (await model.targetLogProbs(request)).targets.map((t) => t.logprob);
      model.dispose();
      expect(out.logprobs).toHaveLength(4);
      out.logprobs.forEach((x: number, i: number) => expect(x).toBeCloseTo(expected[i], 5));
      expect(Number.isFinite(out.kl)).toBe(true);
      expect(out.samples).toBe(3);
      expect(out.typed).toBe('NOT_FOUND');
    });

    it('type-checks a TypeScript consumer strictly against the published .d.ts (internals hidden), and runs it', () => {
      writeFileSync(join(consumer, 'consumer.ts'), tsConsumer);
      writeFileSync(
        join(consumer, 'tsconfig.json'),
        JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: false, types: ['node'], outDir: 'out' }, files: ['consumer.ts'] }),
      );
      mkdirSync(join(consumer, 'node_modules', '@types'), { recursive: true });
      symlinkSync(join(packageRoot, 'node_modules', '@types', 'node'), join(consumer, 'node_modules', '@types', 'node'));
      const tsc = spawnSync(process.execPath, [join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: consumer, encoding: 'utf8' });
      expect(tsc.stdout + tsc.stderr).toBe('');
      expect(tsc.status).toBe(0);
      const out = JSON.parse(run(process.execPath, [join('out', 'consumer.js'), modelSpec], { cwd: consumer, env: strippedEnv }));
      expect(out.logprobs).toHaveLength(4);
      expect(out.html).toBe(true);
      expect(Number.isFinite(out.kl)).toBe(true);
    });
  },
);

// The same tarball without prebuilds compiles the addon at install (cmake-js, or node-gyp without
// CMake): minutes on 2 cores, so only when asked for. `npm ci` in this repository runs the same
// install script on every CI run; this proves the packed files are enough to build from.
const compile = process.env.DIFFUSE_PACK_COMPILE === '1';
(compile && linuxX64 ? describe : describe.skip)(
  `PACKAGE TEST (slow, DIFFUSE_PACK_COMPILE=1): the packed tarball without prebuilds compiles at install and runs${compile ? '' : ' (skipped: set DIFFUSE_PACK_COMPILE=1; it compiles for minutes)'}`,
  () => {
    let work: string;
    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });
    it('installs offline, building the addon from the packed sources, and gives the library’s numbers', async () => {
      work = mkdtempSync(join(tmpdir(), 'diffuse-package-compile-'));
      const modelSpec = haveDefault ? DEFAULT_MODEL : await writeTinyChatModel(2);
      const npmCli = realpathSync(run('sh', ['-c', 'command -v npm'], { cwd: work }).trim());
      const packed = join(work, run(process.execPath, [npmCli, 'pack', '--silent', '--pack-destination', work], { cwd: packageRoot }).trim().split('\n').pop()!);
      const stage = join(work, 'stage');
      mkdirSync(stage);
      run('tar', ['xzf', packed, '-C', stage], { cwd: work });
      rmSync(join(stage, 'package', 'prebuilds'), { recursive: true, force: true });
      const tarball = join(work, 'diffuse-source.tgz');
      run('tar', ['czf', tarball, '-C', stage, 'package'], { cwd: work });
      const consumer = join(work, 'consumer');
      mkdirSync(consumer);
      writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { diffuse: `file:${tarball}` } }));
      writeFileSync(join(consumer, 'package-lock.json'), JSON.stringify(consumerLockfile(tarball)));
      run(process.execPath, [npmCli, 'ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: consumer });
      expect(existsSync(join(consumer, 'node_modules', 'diffuse', 'build', 'Release', 'diffuse.node'))).toBe(true);
      writeFileSync(join(consumer, 'consumer.mjs'), esmConsumer);
      const out = JSON.parse(run(process.execPath, ['consumer.mjs', modelSpec], { cwd: consumer }));
      const model = await loadModel(modelSpec, { device: 'cpu' });
      const expected = (await model.targetLogProbs(request)).targets.map((t) => t.logprob);
      model.dispose();
      out.logprobs.forEach((x: number, i: number) => expect(x).toBeCloseTo(expected[i], 5));
    }, 1_800_000);
  },
);
