/**
 * The HTML report: self-contained, escaped, and — opened in headless Chromium — rendering the
 * charts with their labels, bars sorted from most to least likely, base beside tuned.
 *
 * Evaluations come from evaluate() on a tiny random model (base, and with an adapter), plus a
 * biography task measured from written biographies, since a random model writes none.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { chromium, type Browser } from 'playwright-core';

import { evaluate, type Evaluation, type EvalTask, type TaskEvaluation } from '../../lib/eval/evaluate.js';
import { sampledMetrics } from '../../lib/eval/metrics.js';
import { renderReport, targetLabel, type ReportRun } from '../../lib/eval/report.js';
import { loadTinyChatModel } from './tiny-chat-model.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && process.env.DIFFUSE_REQUIRE_CHROMIUM === '1')
  throw new Error(`DIFFUSE_REQUIRE_CHROMIUM=1 but there is no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);

const numbers: EvalTask = {
  name: 'numbers',
  prompts: [
    { request: 'Pick a number from 1 to 4, like {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] },
    { request: 'Choose one of 1, 2, 3, 4 as {n}.', targets: ['{1}', '{2}', '{3}', '{4}'] },
  ],
};
const colours: EvalTask = { name: 'colours <&>', prompts: [{ request: 'Pick a colour <b>bold</b>.', targets: ['{red}', '{green}', '{<blue>}'] }] };

function biographyTask(names: string[]): TaskEvaluation {
  const texts = names.map((n, i) => `{${n} Hart}\n{Female}\n{June 1, ${1980 + (i % 3)}}\n{Paris, France}\n{Physicist}\n{Found a new particle.}`);
  const metrics = sampledMetrics(texts, { biography: true, resamples: 50 });
  const sampled = { ...metrics, finishReasons: { stop: texts.length, length: 0 }, meanTokens: 40, examples: texts.slice(0, 5) };
  return {
    task: 'ficticious-people',
    prompts: [{ request: 'Generate a random biography sketch of a fictional, notable person.', targets: [], sampled }],
    sampled: { ...metrics, fields: metrics.fields },
  };
}

let runs: ReportRun[];
let html: string;

beforeAll(async () => {
  const model = await loadTinyChatModel(3);
  const adapter = await model.createAdapter({ rank: 2, seed: 2 });
  for (const t of adapter.tensors())
    if (t.name.endsWith('lora_B')) await adapter.setTensor(t.name, Float32Array.from({ length: t.shape[0] * t.shape[1] }, (_, i) => Math.cos(i)));
  const options = { samples: 8, maxTokens: 5, seed: 1, bootstrap: 50 };
  const base: Evaluation = await evaluate(model, [numbers, colours], options);
  const tuned: Evaluation = await evaluate(model, [numbers, colours], { ...options, adapter });
  adapter.dispose();
  model.dispose();
  base.tasks.push(biographyTask(['Evelyn', 'Evelyn', 'Evelyn', 'Ada']));
  tuned.tasks.push(biographyTask(['Amara', 'Liang', 'Evelyn', 'Noor']));
  runs = [
    { label: 'base', evaluation: base },
    { label: 'tuned', evaluation: tuned },
  ];
  html = renderReport(runs, { date: new Date(Date.UTC(2025, 0, 2, 3, 4)) });
});

describe('renderReport', () => {
  it('is one self-contained document: no scripts, nothing fetched, fonts from the system', () => {
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).not.toMatch(/<script|<link|<img|@import|url\(|https?:\/\//i);
    expect(html).toContain('<svg');
  });

  it('escapes what tasks say', () => {
    expect(html).toContain('colours &lt;&amp;&gt;');
    expect(html).toContain('Pick a colour &lt;b&gt;bold&lt;/b&gt;.');
    expect(html).toContain('&lt;blue&gt;');
    expect(html).not.toContain('<blue>');
    expect(targetLabel('{Fatema Rahman}\n{Female}')).toBe('Fatema Rahman');
  });

  it('rejects an empty list of evaluations', () => {
    expect(() => renderReport([])).toThrow(/at least one/);
  });
});

(haveChromium ? describe : describe.skip)(`the report in headless Chromium${haveChromium ? '' : ` (skipped: no Chromium at ${CHROMIUM}; apt-get install -y chromium, or set CHROMIUM_PATH)`}`, () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    });
  });
  afterAll(async () => browser?.close());

  it('renders every chart with its labels, sorted, base beside tuned, and fetches nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'diffuse-report-'));
    const file = join(dir, 'report.html');
    await writeFile(file, html);
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    await page.goto(pathToFileURL(file).href);
    expect(requested).toEqual([pathToFileURL(file).href]);

    const png = await page.screenshot({ path: join(dir, 'report.png'), fullPage: true });
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect((await readFile(join(dir, 'report.png'))).length).toBeGreaterThan(20000);

    await expect(page.title()).resolves.toBe('diffuse eval: ' + runs[0].evaluation.model);
    for (const heading of ['Summary', 'numbers', 'colours <&>', 'ficticious-people']) {
      const name = new RegExp(`^${heading.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}( |$)`);
      expect(await page.getByRole('heading', { name }).isVisible()).toBe(true);
    }

    // The numbers task: its mean distribution, base and tuned beside each other, labelled 1–4, most likely first.
    const section = page.locator('#task-0');
    const figures = section.locator(':scope > .panels > figure');
    await expect(figures.count()).resolves.toBe(2);
    const boxes = await Promise.all([0, 1].map((i) => figures.nth(i).boundingBox()));
    expect(Math.abs(boxes[0]!.y - boxes[1]!.y)).toBeLessThan(2);
    expect(boxes[1]!.x).toBeGreaterThan(boxes[0]!.x + boxes[0]!.width - 1);
    for (let i = 0; i < 2; i++) {
      const figure = figures.nth(i);
      expect(await figure.locator('figcaption .run').innerText()).toBe(runs[i].label);
      const labels = await figure.locator('svg text.label').allTextContents();
      expect([...labels].sort()).toEqual(['1', '2', '3', '4']);
      for (const label of labels) expect(await figure.locator('svg text.label', { hasText: label }).isVisible()).toBe(true);
      const heights = await figure.locator('svg rect').evaluateAll((rects) => rects.map((r) => Number(r.getAttribute('height'))));
      expect(heights).toHaveLength(4);
      for (let k = 1; k < 4; k++) expect(heights[k]).toBeLessThanOrEqual(heights[k - 1]);
      const expected = runs[i].evaluation.tasks[0].exact!.distribution!.slice().sort((a, b) => b.prob - a.prob).map((t) => targetLabel(t.target));
      expect(labels).toEqual(expected);
    }

    // A summary row per task with targets (exact) and per task with samples, and the biography fields with their top values.
    const tables = page.locator('table.summary');
    await expect(tables.count()).resolves.toBe(2);
    await expect(tables.nth(0).locator('tbody tr').count()).resolves.toBe(2);
    await expect(tables.nth(1).locator('tbody tr').count()).resolves.toBe(3);
    expect(await page.getByText('KL(p*‖pθ)', { exact: true }).first().isVisible()).toBe(true);
    const bio = page.locator('#task-2');
    for (const field of ['first name', 'last name', 'birth year', 'birth place', 'profession'])
      expect(await bio.locator('svg text.label', { hasText: field }).isVisible()).toBe(true);
    expect(await bio.locator('table.field td', { hasText: 'Evelyn' }).first().isVisible()).toBe(true);
    await page.close();
  });
});
