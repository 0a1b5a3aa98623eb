#!/usr/bin/env node
// Lists the addon's C++ sources for binding.gyp (which has no globbing), one group at a time:
//   base    every engine, CPU, io and binding source not tied to an instruction set
//   avx2    the *_avx2.cpp kernel variants      avx512  the *_avx512.cpp kernel variants
// The same split CMakeLists.txt makes with its globs.
import { readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const group = process.argv[2];
const dirs = ['native/engine', 'native/io', 'native/cpu', 'native/bindings'];
const files = dirs.flatMap((d) =>
  readdirSync(join(root, d))
    .filter((f) => f.endsWith('.cpp'))
    .sort()
    .map((f) => relative(root, join(root, d, f))),
);
const isa = (f) => (f.endsWith('_avx512.cpp') ? 'avx512' : f.endsWith('_avx2.cpp') ? 'avx2' : 'base');
if (!['base', 'avx2', 'avx512'].includes(group)) {
  console.error('usage: gyp-sources.mjs base|avx2|avx512');
  process.exit(2);
}
console.log(files.filter((f) => isa(f) === group).join(' '));
