/**
 * The CPU thread pool's waiting policy (poll, then sleep; DIFFUSE_SPIN_US caps the poll) changes
 * when threads start work, never what they compute: training steps give the same bits with
 * polling off, with a tiny cap, and with the default.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

function digest(spinMicroseconds: string | undefined): string {
  const env = { ...process.env };
  delete env.DIFFUSE_SPIN_US;
  if (spinMicroseconds !== undefined) env.DIFFUSE_SPIN_US = spinMicroseconds;
  return execFileSync(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'step-bytes.ts')], { env, encoding: 'utf8' });
}

describe('thread pool waiting', () => {
  it('steps give the same bits whether idle threads poll or sleep', () => {
    const sleeping = digest('0');
    expect(sleeping).toMatch(/^[0-9a-f]{64}$/);
    expect(digest('1')).toBe(sleeping);
    expect(digest(undefined)).toBe(sleeping);
  }, 60_000);
});
