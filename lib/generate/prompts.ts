/**
 * The prompts `diffuse generate` samples: the prompts of tasks, one --request, or a JSON Lines
 * file with one prompt per line,
 *
 *   {"id": "bio-1", "request": "Write a biography …", "targets": ["{…}", …]}
 *
 * where `request` (or `prompt`) is required, `id` defaults to the line number and `targets`,
 * when given, makes each sample's `valid` say whether its answer is one of them. A line that is
 * not such an object is an error naming the file and the line.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';

import { InvalidArgumentError, NotFoundError } from '../errors.js';
import type { TargetRequest } from '../targets/target-set.js';

export interface GeneratePrompt {
  /** Unique among the run's prompts; every output line names it. */
  id: string;
  request: TargetRequest;
}

/** Prompts that are summarised together (a task's, or a file's). */
export interface PromptGroup {
  name: string;
  prompts: GeneratePrompt[];
}

/** The groups of a list of tasks: a task's prompt i is `name` when it has one prompt, `name#i` otherwise. */
export function promptsOfTasks(tasks: readonly { name: string; prompts: readonly TargetRequest[] }[]): PromptGroup[] {
  return checkUnique(
    tasks.map((t) => ({ name: t.name, prompts: t.prompts.map((request, i) => ({ id: t.prompts.length > 1 ? `${t.name}#${i}` : t.name, request })) })),
  );
}

function checkUnique(groups: PromptGroup[]): PromptGroup[] {
  const seen = new Set<string>();
  for (const p of groups.flatMap((g) => g.prompts)) {
    if (seen.has(p.id)) throw new InvalidArgumentError(`two prompts are both called '${p.id}'; give each task once`);
    seen.add(p.id);
  }
  return groups;
}

/** Reads a prompts file (JSON Lines, see above); blank lines are skipped. */
export async function readPromptsFile(file: string): Promise<PromptGroup> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(`prompts file ${file} not found`);
    throw new InvalidArgumentError(`cannot read prompts file ${file}: ${(error as Error).message}`);
  }
  const prompts: GeneratePrompt[] = [];
  const lineOf = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const at = `${file} line ${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new InvalidArgumentError(`${at} is not valid JSON (${(error as Error).message}); each line must be an object like {"id": "p1", "request": "…"}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidArgumentError(`${at} is not a JSON object; each line must be like {"id": "p1", "request": "…"}`);
    const o = value as Record<string, unknown>;
    const request = o.request ?? o.prompt;
    if (typeof request !== 'string' || request.trim() === '') throw new InvalidArgumentError(`${at} has no "request" string (the prompt to sample)`);
    const id = o.id === undefined ? String(i + 1) : o.id;
    if (typeof id !== 'string' && typeof id !== 'number') throw new InvalidArgumentError(`${at}: "id" must be a string or a number, not ${JSON.stringify(id)}`);
    const targets = o.targets ?? [];
    if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string')) throw new InvalidArgumentError(`${at}: "targets" must be a list of strings`);
    const key = String(id);
    if (lineOf.has(key)) throw new InvalidArgumentError(`${at} has id '${key}', which line ${lineOf.get(key)} has already; ids must be unique`);
    lineOf.set(key, i + 1);
    prompts.push({ id: key, request: { request, targets: targets as string[] } });
  });
  if (prompts.length === 0) throw new InvalidArgumentError(`prompts file ${file} holds no prompts; write one JSON object per line, like {"id": "p1", "request": "…"}`);
  return { name: basename(file), prompts };
}
