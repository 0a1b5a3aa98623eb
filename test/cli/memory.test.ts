/**
 * The CLI under a memory limit: `diffuse logprobs` and `diffuse eval` over a target set too
 * large for the room (a limit set a little above what this process holds, through the addon's
 * setMemoryLimit: jest's process.env is not the process's environment), and `diffuse generate`
 * in a child process under DIFFUSE_MEMORY_LIMIT with a batch whose cache would not fit, exit 1
 * with the engine's typed OUT_OF_MEMORY message (what needed how much, what to try) before
 * allocating it; generate's output file keeps every line an earlier run wrote.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { native } from '../../lib/native.js';
import { writeTinyChatModel } from '../eval/tiny-chat-model.js';
import { runCli } from './run.js';

const MiB = 2 ** 20;

/**
 * Runs the CLI with a limit `room` bytes above this process's resident set, once the freed
 * activation blocks kept for reuse are freed (planning counts those as available).
 */
async function limited(room: number, args: string[]) {
  native().releaseKeptMemory();
  native().setMemoryLimit(process.memoryUsage().rss + room);
  try {
    return await runCli(args);
  } finally {
    native().setMemoryLimit(0);
  }
}

// 3000 targets: about 9000 trie rows, an eval forward of about 570 MiB on SmolLM2; its
// Q4_1 weights (about 100 MiB) load within the room.
const many = ['--request', 'Pick a number.', '--targets', ...Array.from({ length: 3000 }, (_, i) => `{${i + 1}}`)];

describe('the CLI under a memory limit', () => {
  it.each([['logprobs'], ['eval']])('diffuse %s refuses an evaluation that would not fit: exit 1, what needs how much, what to try', async (command) => {
    const { code, stdout, stderr } = await limited(300 * MiB, [command, ...many, '--json']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(
      /(^|\n)diffuse: evaluating \d+ rows \(\d+ parent positions, \d+ target tokens; .* of layer activations, .* of outputs, .* of kernel scratch\) needs \d+\.\d MiB but \d+\.\d MiB is available \(the memory limit of \d+\.\d [MG]iB set for this process, less its .* resident\); try fewer prompts or targets per call/,
    );
  });

  it('diffuse generate refuses a batch whose cache would not fit, and the samples already saved stay', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-memory-cli-'));
    const model = await writeTinyChatModel(9);
    const task = join(dir, 'digits.json');
    await writeFile(task, JSON.stringify({ request: 'Pick a digit from 1 to 4, like {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] }));
    const out = join(dir, 'samples.jsonl');
    const base = ['generate', '--model', model, '--task', task, '--max-tokens', '5', '--seed', '3', '--out', out, '--json'];
    expect((await runCli([...base, '-n', '4'])).code).toBe(0);
    const saved = await readFile(out, 'utf8');
    expect(saved.split('\n').filter(Boolean)).toHaveLength(4);
    // A million samples decoded together: a cache of about 4 million rows, 1.4 GiB, more than
    // a 1 GiB limit leaves once the CLI has started.
    const child = spawnSync(process.execPath, ['--import', 'tsx', join('lib', 'cli', 'main.ts'), ...base, '-n', '1000000', '--batch-size', '1000000'], {
      encoding: 'utf8',
      env: { ...process.env, DIFFUSE_MEMORY_LIMIT: '1G' },
    });
    expect(child.status).toBe(1);
    expect(child.stderr).toMatch(
      /^diffuse: a sampling session's cache of \d+ rows \(keys and values of \d+ layers and the final hidden states, 1\.\d GiB\) needs .* but .* is available \(DIFFUSE_MEMORY_LIMIT=1G less this process's .* resident\); try fewer samples per call, shorter prompts or a lower max tokens/,
    );
    expect(await readFile(out, 'utf8')).toBe(saved);
  });
});
