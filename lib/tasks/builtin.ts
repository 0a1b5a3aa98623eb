/**
 * The built-in task library, usable by id. Where a task is one of the paper's, its prompts are
 * the reference's files as shipped in data/tasks/reference (MIT, license beside them) or the
 * paper's exact wording; the rest are ours, in the same style.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { TargetRequest } from '../targets/target-set.js';
import { bioPeople, daysInMonth, formatBioTarget, type BioPools } from './bio-attributes.js';
import { TaskError } from './errors.js';
import { parsePromptJson, type Task } from './prompt-files.js';

/** Where the built-in library's data lives (two levels up from lib/tasks and from dist/tasks). */
export const builtinDataDir = fileURLToPath(new URL('../../data/tasks/', import.meta.url));

/** A built-in task id with what it holds. */
export interface BuiltinTaskInfo {
  /** Pass to builtinTask() or loadTasks(). */
  id: string;
  title: string;
  prompts: number;
  /** Distinct target strings over all its prompts. */
  targets: number;
  /** What it is, where it comes from, and the other ids of its family. */
  description: string;
}

interface Built {
  title: string;
  description: string;
  prompts: TargetRequest[];
}

const cache = new Map<string, unknown>();
function dataFile<T>(relative: string, parse: (text: string, file: string) => T): T {
  const file = join(builtinDataDir, relative);
  if (!cache.has(file)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new TaskError(file, undefined, `the built-in task library's data cannot be read (${(error as Error).message}); reinstall diffuse`, { cause: error });
    }
    cache.set(file, parse(text, file));
  }
  return cache.get(file) as T;
}

/** A prompt file of the shipped reference data (prompts/...), checked like any prompt file; a fresh copy. */
function referencePrompt(relative: string): TargetRequest {
  const cached = dataFile(`reference/prompts/${relative}`, (text, file) =>
    parsePromptJson(text, file, (message) => {
      throw new TaskError(file, undefined, `unexpected in the shipped reference data: ${message}`);
    }),
  );
  return structuredClone(cached);
}

const json = (text: string) => JSON.parse(text) as unknown;

/** A prompt in the reference's style: no answer prefix, targets ended by the end of turn. */
function prompt(request: string, targets: readonly string[]): TargetRequest {
  return { request, response: [''], targets: targets.slice(), eos: true };
}

const braces = (items: readonly (string | number)[]) => items.map((x) => `{${x}}`);
function range(low: number, high: number, keep: (n: number) => boolean = () => true): number[] {
  const out: number[] = [];
  for (let n = low; n <= high; n++) if (keep(n)) out.push(n);
  return out;
}

// ---- rng:LOW-HIGH ----------------------------------------------------------------------------

/**
 * Appendix B.1's five prompts, word for word (their typos included: they are what the paper
 * evaluated). The paper's {n} is typeset $\{n\}$ in the text; it is the literal "{n}".
 */
export function rngRequests(low: number, high: number): string[] {
  return [
    `Randomly pick an integer between ${low} and ${high}. Do not provide any code. Output only the number between two curly braces, like this: {number}. Don't output code.`,
    `Output a number uniform randomly from the range ${low} to ${high}, inclusive. Output the number between two curly braces, like this: {number}. Don't output code.`,
    `Choose a number at random between ${low} and ${high}. Output your chosen number bweet two curly braces, like this {number}.`,
    `Select an integer completely at random from the interval [${low}, ${high}]. Output the selected integer between two curly braces, like this {n}.`,
    `I need you to pick a number completely at random. The number should be between ${low} and ${high}. Print the number between two curly braces, like this: {n}.`,
  ];
}

const MAX_RNG_TARGETS = 10000;

function buildRng(id: string, param: string | undefined): Built {
  const match = param === undefined ? null : /^(0|[1-9]\d*)-(0|[1-9]\d*)$/.exec(param);
  if (!match) throw new TaskError(id, undefined, 'give the range as rng:LOW-HIGH with whole numbers, e.g. rng:1-10');
  const low = Number(match[1]), high = Number(match[2]);
  if (low >= high) throw new TaskError(id, undefined, `LOW (${low}) must be less than HIGH (${high})`);
  if (high - low + 1 > MAX_RNG_TARGETS)
    throw new TaskError(id, undefined, `${high - low + 1} numbers is more than ${MAX_RNG_TARGETS}; use a smaller range`);
  const targets = braces(range(low, high));
  return {
    title: `Random number from ${low} to ${high}`,
    description: `RNG: the paper's five phrasings (appendix B.1) with low = ${low}, high = ${high}; targets {${low}} … {${high}}. Any rng:LOW-HIGH works.`,
    prompts: rngRequests(low, high).map((request) => prompt(request, targets)),
  };
}

// ---- baby-names ------------------------------------------------------------------------------

function buildBabyNames(): Built {
  return {
    title: 'Baby names',
    description: "BABYNAMES: the paper's prompt with the reference's 200 English first names (reference/prompts/baby-names/train.json).",
    prompts: [referencePrompt('baby-names/train.json')],
  };
}

// ---- countries[:continent] -------------------------------------------------------------------

interface Continent {
  id: string;
  name: string;
  countries: string[];
}
const continents = () => dataFile('countries.json', (text) => (json(text) as { continents: Continent[] }).continents);

/** The first is the reference's continent-countries wording. */
function countryRequests(where: string): string[] {
  const tail = 'Output only the country name between two curly braces, like this: {country name}. Don\'t output code.';
  return [
    `Output a random country ${where}, chosen completely at random. ${tail}`,
    `Name a country ${where}, picked completely at random. ${tail}`,
    `Choose one country ${where} at random. ${tail}`,
  ];
}

function buildCountries(id: string, param: string | undefined): Built {
  const all = continents();
  const forms = all.map((c) => `countries:${c.id}`).join(', ');
  if (param === undefined) {
    const targets = braces(all.flatMap((c) => c.countries));
    return {
      title: 'Countries of the world',
      description: `All ${targets.length} countries, three phrasings. One continent: ${forms}.`,
      prompts: countryRequests('in the world').map((request) => prompt(request, targets)),
    };
  }
  const continent = all.find((c) => c.id === param);
  if (!continent) throw new TaskError(id, undefined, `unknown continent ${JSON.stringify(param)}; use one of ${forms}, or countries for all`);
  const targets = braces(continent.countries);
  return {
    title: `Countries in ${continent.name}`,
    description: `COUNTRIES for one continent: the reference's wording and two more; ${targets.length} countries.`,
    prompts: countryRequests(`in ${continent.name}`).map((request) => prompt(request, targets)),
  };
}

// ---- fruits ----------------------------------------------------------------------------------

function buildFruits(): Built {
  return {
    title: 'Fruits',
    description: "FRUITS: the reference's two prompts and 81 fruits (reference/prompts/fruits).",
    prompts: [referencePrompt('fruits/fruit-0.json'), referencePrompt('fruits/fruit-1.json')],
  };
}

// ---- days-dates[:days|MONTH] -----------------------------------------------------------------

const months = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];
const capitalised = (word: string) => word[0].toUpperCase() + word.slice(1);

function dayRequests(): TargetRequest[] {
  const targets = braces(['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday']);
  const tail = "Output only the day between two curly braces, like this: {day}. Don't output code.";
  return [prompt(`Output a randomly selected day of the week. ${tail}`, targets), prompt(`Pick a day of the week completely at random. ${tail}`, targets)];
}

/** The reference's two wordings for dates of a month; February has 29 (a leap year's) days. */
function dateRequests(month: string): TargetRequest[] {
  const name = capitalised(month);
  const days = daysInMonth(2024, months.indexOf(month) + 1);
  const targets = range(1, days).map((d) => `{${name} ${d}}`);
  const tail = `Output only the date between two curly braces, like this: {${name} 1}. Don't output code.`;
  return [prompt(`Provide a random date in ${name}. ${tail}`, targets), prompt(`Randomly choose a date from the month of ${name}. ${tail}`, targets)];
}

function buildDaysDates(id: string, param: string | undefined): Built {
  if (param === undefined)
    return {
      title: 'Days and dates',
      description:
        "DAYS AND DATES as in the reference (reference/prompts/day-date, same prompts in its sorted order): days of the week, dates in December and June. Parts: days-dates:days, days-dates:MONTH (e.g. days-dates:march).",
      prompts: [...dayRequests(), ...dateRequests('december'), ...dateRequests('june')],
    };
  if (param === 'days') return { title: 'Days of the week', description: "The reference's two day-of-the-week prompts.", prompts: dayRequests() };
  if (!months.includes(param)) throw new TaskError(id, undefined, `use days-dates:days or days-dates:MONTH with MONTH one of ${months.join(', ')}`);
  return { title: `Dates in ${capitalised(param)}`, description: "The reference's two date-of-a-month wordings.", prompts: dateRequests(param) };
}

// ---- numbers[:even|odd|prime] ----------------------------------------------------------------

const isPrime = (n: number) => n > 1 && range(2, Math.floor(Math.sqrt(n))).every((d) => n % d !== 0);
const numberTail = "Output only the number between two curly braces, like this: {number}. Don't output code.";
/** The reference's prompts/numbers files, in their sorted order, as [file stem, request, targets]. */
const numberPrompts: [string, string, number[]][] = [
  ['even-0', `Generate a random even number between 1 and 10. ${numberTail}`, range(1, 10, (n) => n % 2 === 0)],
  ['even-1', `Generate a random even number between 1 and 100. ${numberTail}`, range(1, 100, (n) => n % 2 === 0)],
  ['odd-0', `Generate a random odd number between 1 and 10. ${numberTail}`, range(1, 10, (n) => n % 2 === 1)],
  ['odd-1', `Generate a random odd number between 1 and 100. ${numberTail}`, range(1, 100, (n) => n % 2 === 1)],
  ['prime-0', `Randomly pick a prime number between 1 and 50. ${numberTail}`, range(1, 50, isPrime)],
  ['prime-1', `Generate a random prime number between 1 and 100. ${numberTail}`, range(1, 100, isPrime)],
  ['rng-0', `Generate a random number between 1 and 10. ${numberTail}`, range(1, 10)],
  ['rng-1', `Randomly pick an integer between 1 and 100. ${numberTail}`, range(1, 100)],
];
const numberKinds = ['even', 'odd', 'prime'];

function buildNumbers(id: string, param: string | undefined): Built {
  if (param !== undefined && !numberKinds.includes(param))
    throw new TaskError(id, undefined, `use numbers, or numbers:KIND with KIND one of ${numberKinds.join(', ')}`);
  const chosen = numberPrompts.filter(([stem]) => param === undefined || stem.startsWith(`${param}-`));
  return {
    title: param === undefined ? 'Numbers' : `${capitalised(param)} numbers`,
    description:
      param === undefined
        ? "NUMBERS as in the reference (reference/prompts/numbers): even, odd and prime numbers and plain ranges, up to 10, 50 or 100. Parts: numbers:even, numbers:odd, numbers:prime."
        : `The reference's ${param}-number prompts.`,
    prompts: chosen.map(([, request, targets]) => prompt(request, braces(targets))),
  };
}

// ---- occupations[:LETTER] --------------------------------------------------------------------

function occupationLetterRequest(letter: string): string {
  return `Output an occupation that starts with the letter "${letter}", chosen completely at random. Output only the occupation between two curly braces like {occupation}. Don't output code.`;
}

function buildOccupations(id: string, param: string | undefined): Built {
  const all = referencePrompt('occupations/occupations-0.json');
  const byLetter = (letter: string) => all.targets.filter((t) => t[1] === letter);
  const letters = [...new Set(all.targets.map((t) => t[1]))].filter((l) => byLetter(l).length >= 2).sort();
  if (param === undefined)
    return {
      title: 'Occupations',
      description: `OCCUPATIONS as in the reference (reference/prompts/occupations): any of 200 occupations, and those starting with A or with M. One letter: occupations:LETTER for ${letters.join(' ')}.`,
      prompts: [all, prompt(occupationLetterRequest('A'), byLetter('A')), prompt(occupationLetterRequest('M'), byLetter('M'))],
    };
  const letter = param.toUpperCase();
  if (!letters.includes(letter))
    throw new TaskError(id, undefined, `use occupations:LETTER with a letter that starts at least two of the 200 occupations: ${letters.join(' ')}`);
  return {
    title: `Occupations starting with ${letter}`,
    description: `The reference's letter wording; its occupations that start with ${letter}.`,
    prompts: [prompt(occupationLetterRequest(letter), byLetter(letter))],
  };
}

// ---- bio-attributes[:SEED] -------------------------------------------------------------------

function buildBioAttributes(id: string, param: string | undefined): Built {
  if (param !== undefined && !/^(0|[1-9]\d*)$/.test(param)) throw new TaskError(id, undefined, 'use bio-attributes or bio-attributes:SEED with a whole-number seed');
  const seed = param === undefined ? 0 : Number(param);
  if (seed > 0xffffffff) throw new TaskError(id, undefined, `the seed must be below 2^32`);
  const pools = dataFile('bio-attributes.json', (text) => json(text) as BioPools);
  const reference = referencePrompt('ficticious-people/ficticious-people-train.json');
  const people = bioPeople(pools, seed);
  return {
    title: 'Biography attributes',
    description: `§6.2: ${people.length} generated {First Last} {Gender} {Month DD, YYYY} {City, Country} tuples, balanced in gender, birth year (1900–1999) and birth place (${pools.countries.length} countries), with the reference's biography request and eos false. Seed ${seed}; any bio-attributes:SEED works.`,
    prompts: [{ request: reference.request, response: '', targets: people.map(formatBioTarget), eos: false }],
  };
}

// ---- the library -----------------------------------------------------------------------------

const families: Record<string, (id: string, param: string | undefined) => Built> = {
  rng: buildRng,
  'baby-names': (id, param) => (param === undefined ? buildBabyNames() : noParam(id)),
  countries: buildCountries,
  fruits: (id, param) => (param === undefined ? buildFruits() : noParam(id)),
  'days-dates': buildDaysDates,
  numbers: buildNumbers,
  occupations: buildOccupations,
  'bio-attributes': buildBioAttributes,
};

function noParam(id: string): never {
  throw new TaskError(id, undefined, `this built-in task takes no ":" part; use ${id.slice(0, id.indexOf(':'))}`);
}

const listed = () => [
  'rng:1-10',
  'rng:1-100',
  'baby-names',
  'countries',
  ...continents().map((c) => `countries:${c.id}`),
  'fruits',
  'days-dates',
  'days-dates:days',
  'numbers',
  ...numberKinds.map((k) => `numbers:${k}`),
  'occupations',
  'bio-attributes',
];

const forms = 'rng:LOW-HIGH, countries:CONTINENT, days-dates:MONTH, numbers:KIND, occupations:LETTER, bio-attributes:SEED';

/** The valid ids and forms, for error messages. */
export function builtinIdsHelp(): string {
  return `valid ids: ${listed().join(', ')}; and the forms ${forms}`;
}

/** True when `id` names a built-in task family (its ":" part may still be bad). */
export function isBuiltinTaskId(id: string): boolean {
  return Object.hasOwn(families, id.trim().toLowerCase().split(':')[0]);
}

function build(id: string): { canonical: string; built: Built } {
  const canonical = id.trim().toLowerCase();
  const colon = canonical.indexOf(':');
  const family = colon < 0 ? canonical : canonical.slice(0, colon);
  if (!Object.hasOwn(families, family))
    throw new TaskError(id, undefined, `unknown built-in task; ${builtinIdsHelp()}`);
  return { canonical, built: families[family](canonical, colon < 0 ? undefined : canonical.slice(colon + 1)) };
}

/** The built-in task with this id (case-insensitive), named by its id. */
export function builtinTask(id: string): Task {
  const { canonical, built } = build(id);
  const source = `builtin:${canonical}`;
  return {
    name: canonical,
    source,
    prompts: built.prompts,
    promptSources: built.prompts.map((_, i) => `${source}#${i}`),
    hasTargets: built.prompts.every((p) => p.targets.length > 0),
  };
}

/** The built-in tasks, one per listed id, with their sizes. */
export function listBuiltinTasks(): BuiltinTaskInfo[] {
  return listed().map((id) => {
    const { built } = build(id);
    return {
      id,
      title: built.title,
      prompts: built.prompts.length,
      targets: new Set(built.prompts.flatMap((p) => p.targets)).size,
      description: built.description,
    };
  });
}
