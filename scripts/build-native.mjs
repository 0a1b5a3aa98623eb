#!/usr/bin/env node
// Builds the native addon at install time: cmake-js against node-api-headers (no header
// download), with the CUDA backend when a CUDA toolkit is found. A prebuilt binary for this
// platform, when the package ships one, is used instead. --force rebuilds regardless.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const force = process.argv.includes('--force');
const require = createRequire(import.meta.url);

function prebuiltAvailable() {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  return existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.node'));
}

function hasCommand(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

if (!force && prebuiltAvailable()) {
  console.log('diffuse: using the prebuilt native addon');
  process.exit(0);
}

if (!hasCommand('cmake')) {
  console.log('diffuse: cmake not found; building the CPU engine with node-gyp instead (install CMake for the CUDA backend)');
  execFileSync('npm', ['exec', '--yes', '--', 'node-gyp', 'rebuild'], { cwd: root, stdio: 'inherit' });
  process.exit(0);
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, force ? 'rebuild' : 'compile', '--directory', root, '--config', 'Release'];
const jobs = Math.max(1, (await import('node:os')).availableParallelism());
args.push('--parallel', String(jobs));
const cudaRoot = process.env.CUDAToolkit_ROOT ?? process.env.CUDA_HOME ?? process.env.CUDA_PATH;
if (process.env.DIFFUSE_CUDA) args.push(`--CDDIFFUSE_CUDA=${process.env.DIFFUSE_CUDA}`);
if (cudaRoot) args.push(`--CDCUDAToolkit_ROOT=${cudaRoot}`);
execFileSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
