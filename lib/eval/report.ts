/**
 * The HTML report of one or two evaluations (a base model and the same model tuned): one
 * self-contained file — inline CSS and SVG, no scripts, fonts or images from anywhere — that
 * shows each prompt's distribution over its targets sorted from most to least likely, as the
 * paper's Figure 1 does, side by side per model, with the summary figures per task.
 */
import type { Evaluation, PromptEvaluation, TaskEvaluation } from './evaluate.js';
import { answerGroups, parseAnswer, type ExactMetrics, type FieldMetrics, type SampledAnswer, type SampledMetrics } from './metrics.js';
import type { Interval } from './stats.js';

/** One column of the report: an evaluation and what to call it ('base', 'tuned'). */
export interface ReportRun {
  label: string;
  evaluation: Evaluation;
}

/** The report's title. */
export interface ReportOptions {
  title?: string;
  /** When the report was made (default now). */
  date?: Date;
}

const palette = ['#94a3b8', '#2563eb', '#0d9488', '#c026d3'];
const TARGET_COLOR = '#ea580c';

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function clip(text: string, width: number): string {
  const flat = text.replace(/\s*\n\s*/g, ' ⏎ ');
  return flat.length <= width ? flat : `${flat.slice(0, width - 1)}…`;
}

function pct(p: number): string {
  if (p === 0) return '0%';
  if (p >= 0.1) return `${(p * 100).toFixed(1)}%`;
  if (p >= 0.001) return `${(p * 100).toFixed(2)}%`;
  return `${(p * 100).toExponential(1)}%`;
}

const num = (x: number, digits = 2) => x.toFixed(digits);
const int = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(1));
const interval = ([lo, hi]: Interval, f: (x: number) => string) => `<span class="ci">[${f(lo)}, ${f(hi)}]</span>`;

/** The short label of a target on a chart axis: "{5}" → "5"; several groups → the first. */
export function targetLabel(target: string): string {
  const group = /\{([^{}]*)\}/.exec(target);
  return (group ? group[1] : target).trim();
}

// ---- charts ----------------------------------------------------------------------------------

/** A round step for about `count` ticks up to `max`. */
function tickStep(max: number, count = 4): number {
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
}

interface Bar {
  label: string;
  full: string;
  value: number;
  /** The share among in-set samples, when samples were drawn. */
  sampled?: number;
  /** p*(y). */
  target: number;
}

/**
 * A column chart of one prompt's distribution over its targets, most likely first. `top` is the
 * y-axis maximum, shared by the panels of one prompt so their heights compare.
 */
function distributionChart(bars: Bar[], top: number, color: string, caption: string): string {
  const W = 520, H = 236, left = 46, right = 10, topPad = 14;
  const many = bars.length > 40;
  const bottom = many ? 34 : Math.min(84, 16 + 6.2 * Math.max(...bars.map((b) => Math.min(b.label.length, 12))));
  const plotW = W - left - right, plotH = H - topPad - bottom;
  const step = plotW / bars.length;
  const barW = Math.max(1, step * (bars.length > 80 ? 1 : 0.78));
  const y = (v: number) => topPad + plotH * (1 - Math.min(v, top) / top);
  const parts: string[] = [];
  const tick = tickStep(top);
  for (let v = 0; v <= top + 1e-12; v += tick) {
    parts.push(`<line class="grid" x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`);
    parts.push(`<text class="tick" x="${left - 6}" y="${(y(v) + 3.5).toFixed(1)}" text-anchor="end">${Math.round(v * 1000) / 10}%</text>`);
  }
  bars.forEach((b, i) => {
    const x = left + i * step + (step - barW) / 2;
    const h = Math.max(b.value > 0 ? 0.5 : 0, y(0) - y(b.value));
    parts.push(`<rect x="${x.toFixed(2)}" y="${(y(0) - h).toFixed(2)}" width="${barW.toFixed(2)}" height="${h.toFixed(2)}" fill="${color}"><title>${esc(b.full)}: ${pct(b.value)}${b.sampled !== undefined ? `, sampled ${pct(b.sampled)}` : ''}</title></rect>`);
  });
  // p*: one line when uniform, a step per bar otherwise.
  const uniform = bars.every((b) => Math.abs(b.target - bars[0].target) < 1e-12);
  if (uniform) parts.push(`<line class="target" x1="${left}" x2="${W - right}" y1="${y(bars[0].target).toFixed(1)}" y2="${y(bars[0].target).toFixed(1)}"/>`);
  else bars.forEach((b, i) => parts.push(`<line class="target" x1="${(left + i * step).toFixed(2)}" x2="${(left + (i + 1) * step).toFixed(2)}" y1="${y(b.target).toFixed(1)}" y2="${y(b.target).toFixed(1)}"/>`));
  if (bars.some((b) => b.sampled !== undefined))
    bars.forEach((b, i) => {
      if (b.sampled === undefined || b.sampled === 0) return;
      parts.push(`<circle class="dot" cx="${(left + (i + 0.5) * step).toFixed(2)}" cy="${y(b.sampled).toFixed(1)}" r="${bars.length > 60 ? 1.8 : 3}"/>`);
    });
  const labelled = many ? 0 : bars.length;
  for (let i = 0; i < labelled; i++) {
    const x = left + (i + 0.5) * step, yy = y(0) + 10;
    parts.push(`<text class="label" transform="translate(${x.toFixed(1)},${yy.toFixed(1)}) rotate(-50)" text-anchor="end">${esc(clip(bars[i].label, 12))}</text>`);
  }
  if (many) {
    parts.push(`<text class="tick" x="${left}" y="${H - 14}">${bars.length} targets, most likely first</text>`);
    // The five most likely, listed in the plot's empty upper right.
    bars.slice(0, 5).forEach((b, i) =>
      parts.push(
        `<text class="label" x="${W - right - 4}" y="${topPad + 14 + i * 15}" text-anchor="end">${i + 1}. ${esc(clip(b.label, 22))} <tspan class="tick">${pct(b.value)}</tspan></text>`,
      ),
    );
  }
  parts.push(`<line class="axis" x1="${left}" x2="${W - right}" y1="${y(0)}" y2="${y(0)}"/>`);
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(caption)}">${parts.join('')}</svg>`;
}

/** Horizontal bars of the most frequent sampled values with their counts. */
function countChart(rows: { value: string; count: number; valid?: boolean }[], max: number, color: string, caption: string): string {
  const W = 520, rowH = 21, left = 190, right = 46;
  const H = Math.max(1, rows.length) * rowH + 8;
  const parts = rows.map((r, i) => {
    const w = ((W - left - right) * r.count) / Math.max(1, max);
    const yy = 4 + i * rowH;
    return (
      `<text class="label" x="${left - 8}" y="${yy + 14}" text-anchor="end">${esc(clip(r.value, 30))}<title>${esc(r.value)}</title></text>` +
      `<rect x="${left}" y="${yy + 3}" width="${Math.max(1, w).toFixed(1)}" height="${rowH - 7}" fill="${color}"${r.valid === false ? ' fill-opacity="0.35"' : ''}/>` +
      `<text class="count" x="${(left + w + 5).toFixed(1)}" y="${yy + 14}">${r.count}</text>`
    );
  });
  if (rows.length === 0) parts.push(`<text class="tick" x="${left}" y="18">no answer in the task format</text>`);
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(caption)}">${parts.join('')}</svg>`;
}

/** Grouped columns: each biography field's coverage per run (the paper's Figure 4a). */
function fieldCoverageChart(runs: { label: string; color: string; fields: FieldMetrics[] }[]): string {
  const fields = runs[0].fields.map((f) => f.field);
  const W = 1040, H = 230, left = 46, bottom = 40, topPad = 16;
  const max = Math.max(1, ...runs.flatMap((r) => r.fields.map((f) => f.coverage)));
  const tick = tickStep(max);
  const top = Math.ceil(max / tick) * tick;
  const plotH = H - topPad - bottom, groupW = (W - left - 10) / fields.length;
  const y = (v: number) => topPad + plotH * (1 - v / top);
  const parts: string[] = [];
  for (let v = 0; v <= top + 1e-9; v += tick)
    parts.push(`<line class="grid" x1="${left}" x2="${W - 10}" y1="${y(v)}" y2="${y(v)}"/><text class="tick" x="${left - 6}" y="${y(v) + 3.5}" text-anchor="end">${int(v)}</text>`);
  const barW = (groupW * 0.7) / runs.length;
  fields.forEach((field, g) => {
    runs.forEach((run, r) => {
      const f = run.fields.find((x) => x.field === field)!;
      const x = left + g * groupW + groupW * 0.15 + r * barW;
      parts.push(`<rect x="${x.toFixed(1)}" y="${y(f.coverage).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(y(0) - y(f.coverage)).toFixed(1)}" fill="${run.color}"><title>${esc(run.label)} ${field}: ${f.coverage}</title></rect>`);
      parts.push(`<text class="count" x="${(x + (barW - 2) / 2).toFixed(1)}" y="${(y(f.coverage) - 4).toFixed(1)}" text-anchor="middle">${f.coverage}</text>`);
    });
    parts.push(`<text class="label" x="${(left + (g + 0.5) * groupW).toFixed(1)}" y="${H - bottom + 18}" text-anchor="middle">${esc(field)}</text>`);
  });
  parts.push(`<line class="axis" x1="${left}" x2="${W - 10}" y1="${y(0)}" y2="${y(0)}"/>`);
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="coverage per biography field">${parts.join('')}</svg>`;
}

// ---- figures and tables ----------------------------------------------------------------------

interface Figure {
  name: string;
  kind: 'exact' | 'sampled';
  /** Higher is better (or lower). */
  higher: boolean;
  get(t: TaskEvaluation): { value: number; interval?: Interval } | undefined;
  format(x: number): string;
}

const figures: Figure[] = [
  { name: 'entropy (nats)', kind: 'exact', higher: true, get: (t) => t.exact && { value: t.exact.entropy }, format: (x) => num(x) },
  { name: 'of at most', kind: 'exact', higher: true, get: (t) => t.exact && { value: t.exact.optimalEntropy }, format: (x) => num(x) },
  { name: 'KL(p*‖pθ)', kind: 'exact', higher: false, get: (t) => t.exact && { value: t.exact.kl }, format: (x) => num(x) },
  { name: 'outside the set', kind: 'exact', higher: false, get: (t) => t.exact && { value: t.exact.outsideMass }, format: pct },
  { name: 'coverage', kind: 'sampled', higher: true, get: (t) => t.sampled && { value: t.sampled.coverage, interval: t.sampled.intervals.coverage }, format: int },
  { name: 'in the set', kind: 'sampled', higher: true, get: (t) => (t.sampled?.targetCoverage !== undefined ? { value: t.sampled.targetCoverage } : undefined), format: int },
  { name: 'entropy (nats)', kind: 'sampled', higher: true, get: (t) => t.sampled && { value: t.sampled.entropy, interval: t.sampled.intervals.entropy }, format: (x) => num(x) },
  { name: 'valid', kind: 'sampled', higher: true, get: (t) => t.sampled && { value: t.sampled.validRate, interval: t.sampled.intervals.validRate }, format: pct },
  // Word variety measures open-ended text (the paper's biographies); over a target set it only counts the set's words.
  {
    name: 'unigram div.',
    kind: 'sampled',
    higher: true,
    get: (t) => (t.sampled && !t.exact ? { value: t.sampled.unigramDiversity, interval: t.sampled.intervals.unigramDiversity } : undefined),
    format: (x) => num(x, 3),
  },
];

/** "a → b" with b coloured by whether it is better, and their intervals beneath. */
function compareCell(values: ({ value: number; interval?: Interval } | undefined)[], f: Figure, colors: string[]): string {
  if (values.every((v) => v === undefined)) return '<td><span class="na">—</span></td>';
  const shown = values.map((v, i) => (v === undefined ? '<span class="na">—</span>' : `<span class="v" style="--c:${colors[i]}">${f.format(v.value)}</span>`));
  const intervals = values.map((v) => (v?.interval ? `[${f.format(v.interval[0])}, ${f.format(v.interval[1])}]` : ''));
  let cls = '';
  const a = values[0], b = values[values.length - 1];
  if (values.length > 1 && a && b && f.format(a.value) !== f.format(b.value)) cls = (b.value > a.value) === f.higher ? 'better' : 'worse';
  const ci = intervals.some(Boolean) ? `<div class="ci">${intervals.join(' <span class="arrow">→</span> ')}</div>` : '';
  return `<td class="${cls}">${shown.join('<span class="arrow">→</span>')}${ci}</td>`;
}

/** One table per kind of measure, a row per task that has it. */
function summaryTables(runs: ReportRun[], colors: string[]): string {
  const tasks = runs[0].evaluation.tasks;
  const n = runs[0].evaluation.settings.samples;
  const titles = { exact: 'Exact, over each target set', sampled: `Sampled, ${n} per prompt` };
  return (['exact', 'sampled'] as const)
    .map((kind) => {
      const used = figures.filter((f) => f.kind === kind && tasks.some((_, i) => runs.some((r) => f.get(r.evaluation.tasks[i]) !== undefined)));
      const rows = tasks.flatMap((t, i) => {
        if (!runs.some((r) => used.some((f) => f.get(r.evaluation.tasks[i]) !== undefined))) return [];
        const cells = used.map((f) => (f.name === 'of at most' ? `<td class="muted">${f.format(f.get(t)!.value)}</td>` : compareCell(runs.map((r) => f.get(r.evaluation.tasks[i])), f, colors)));
        const prompts = t.prompts.length > 1 ? ` <span class="muted">mean of ${t.prompts.length} prompts</span>` : '';
        return [`<tr><th><a href="#task-${i}">${esc(t.task)}</a>${prompts}</th>${cells.join('')}</tr>`];
      });
      if (rows.length === 0) return '';
      const head = `<tr><th>${titles[kind]}</th>${used.map((f) => `<th>${esc(f.name)}</th>`).join('')}</tr>`;
      return `<div class="wide"><table class="summary"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table></div>`;
    })
    .join('');
}

function exactCaption(e: Pick<ExactMetrics, 'entropy' | 'optimalEntropy' | 'kl' | 'outsideMass' | 'expectedCoverage'>, targets: number): string {
  return [
    `entropy <b>${num(e.entropy)}</b> of ${num(e.optimalEntropy)} nats`,
    `KL <b>${num(e.kl)}</b>`,
    `outside the set <b>${pct(e.outsideMass)}</b>`,
    `expected coverage-${e.expectedCoverage.n} <b>${num(e.expectedCoverage.value, 1)}</b> of ${targets}`,
  ].join(' · ');
}

function sampledCaption(s: Pick<SampledMetrics, 'n' | 'coverage' | 'entropy' | 'validRate' | 'intervals'> & { targetCoverage?: number }): string {
  const parts = [
    `coverage-${s.n} <b>${int(s.coverage)}</b>${interval(s.intervals.coverage, int)}`,
    `entropy <b>${num(s.entropy)}</b>${interval(s.intervals.entropy, (x) => num(x))}`,
    `valid <b>${pct(s.validRate)}</b>`,
  ];
  if (s.targetCoverage !== undefined) parts.splice(1, 0, `in the set <b>${s.targetCoverage}</b>`);
  return parts.join(' · ');
}

/** What one chart panel shows: pθ over the targets, and the sampled answers when there are samples. */
interface ExactPanel {
  distribution: { target: string; prob: number; weight: number }[];
  caption: string;
  answers?: SampledAnswer[];
}

function barsOf(panel: ExactPanel): Bar[] {
  const { distribution, answers } = panel;
  const inside = distribution.reduce((s, t) => s + t.prob, 0);
  const validCount = answers ? answers.filter((a) => a.valid).reduce((s, a) => s + a.count, 0) : 0;
  const counts = new Map(answers?.map((a) => [a.value, a.count]));
  const groups = answerGroups(distribution.map((t) => t.target));
  return distribution
    .map((t) => ({
      label: targetLabel(t.target),
      full: t.target,
      value: inside > 0 ? t.prob / inside : 0,
      target: t.weight,
      ...(answers ? { sampled: validCount > 0 ? (counts.get(parseAnswer(t.target, groups) ?? t.target.trim()) ?? 0) / validCount : 0 } : {}),
    }))
    .sort((a, b) => b.value - a.value);
}

/** Side-by-side distribution charts sharing one y-axis. */
function exactPanels(panels: ExactPanel[], runs: ReportRun[], colors: string[]): string {
  const bars = panels.map(barsOf);
  const max = Math.max(...bars.flat().flatMap((b) => [b.value, b.sampled ?? 0, b.target]));
  const tick = tickStep(max);
  const top = Math.ceil((max * 1.04) / tick) * tick;
  const figs = panels.map(
    (panel, i) =>
      `<figure><figcaption><span class="run" style="--c:${colors[i]}">${esc(runs[i].label)}</span> ${panel.caption}</figcaption>${distributionChart(bars[i], top, colors[i], `${runs[i].label}: distribution over targets`)}</figure>`,
  );
  return `<div class="panels">${figs.join('')}</div>`;
}

/** Sums answer counts over prompts. */
function mergedAnswers(lists: SampledAnswer[][]): SampledAnswer[] {
  const merged = new Map<string, SampledAnswer>();
  for (const a of lists.flat()) {
    const m = merged.get(a.value);
    if (m) m.count += a.count;
    else merged.set(a.value, { ...a });
  }
  return [...merged.values()].sort((a, b) => b.count - a.count);
}

function promptSection(runs: ReportRun[], colors: string[], taskIndex: number, promptIndex: number): string {
  const evals: PromptEvaluation[] = runs.map((r) => r.evaluation.tasks[taskIndex].prompts[promptIndex]);
  const first = evals[0];
  const out: string[] = [];
  const multi = runs[0].evaluation.tasks[taskIndex].prompts.length > 1;
  out.push(`<div class="prompt">`);
  out.push(`<p class="request">${multi ? `<span class="muted">prompt ${promptIndex + 1}</span> ` : ''}${esc(clip(first.request, 400))}</p>`);
  if (first.exact)
    out.push(
      exactPanels(
        evals.map((e) => ({
          distribution: e.exact!.distribution,
          caption: `${exactCaption(e.exact!, e.exact!.distribution.length)}${e.sampled ? `<br>sampled: ${sampledCaption(e.sampled)}` : ''}`,
          answers: e.sampled?.answers,
        })),
        runs,
        colors,
      ),
    );
  if (evals.some((e) => e.sampled)) {
    const samplesOnly = !first.exact;
    if (samplesOnly || evals.some((e) => e.sampled && e.sampled.answers.some((a) => !a.valid))) {
      const tops = evals.map((e) => (e.sampled ? e.sampled.answers.slice(0, 12) : []));
      const max = Math.max(1, ...tops.flat().map((a) => a.count));
      out.push(`<h4>${samplesOnly ? 'Most frequent answers' : 'Most frequent sampled answers (faded: outside the set)'}</h4><div class="panels">`);
      evals.forEach((e, i) => {
        if (!e.sampled) return;
        const caption = samplesOnly ? sampledCaption(e.sampled) : `parsed ${pct(e.sampled.parsedRate)} · valid ${pct(e.sampled.validRate)}`;
        out.push(`<figure><figcaption><span class="run" style="--c:${colors[i]}">${esc(runs[i].label)}</span> ${caption}</figcaption>${countChart(tops[i], max, colors[i], `${runs[i].label}: most frequent answers`)}</figure>`);
      });
      out.push('</div>');
    }
    const withFields = evals.map((e, i) => ({ label: runs[i].label, color: colors[i], fields: e.sampled?.fields }));
    if (withFields.every((w) => w.fields)) out.push(biographySection(withFields as { label: string; color: string; fields: FieldMetrics[] }[], evals));
    out.push(examples(evals, runs, colors));
  }
  out.push('</div>');
  return out.join('');
}

/**
 * One task: a single prompt in full; several prompts over one target set as their mean
 * distribution, each prompt folded below it; several prompts over different sets one by one.
 */
function taskSection(runs: ReportRun[], colors: string[], t: number): string {
  const tasks = runs.map((r) => r.evaluation.tasks[t]);
  const task = tasks[0];
  const prompts = task.prompts.map((_, p) => promptSection(runs, colors, t, p)).join('');
  const head = `<h2>${esc(task.task)}${task.prompts.length > 1 ? ` <span class="muted">${task.prompts.length} prompts</span>` : ''}</h2>`;
  if (task.prompts.length === 1 || !tasks.every((x) => x.exact?.distribution)) return `<section id="task-${t}">${head}${prompts}</section>`;
  const panels = tasks.map((x) => {
    const answers = x.sampled ? mergedAnswers(x.prompts.map((p) => p.sampled!.answers)) : undefined;
    const sampled = x.sampled ? `<br>sampled: ${sampledCaption({ ...x.sampled, n: x.sampled.n })}` : '';
    return { distribution: x.exact!.distribution!, caption: `mean of ${x.prompts.length} prompts: ${exactCaption(x.exact!, x.exact!.distribution!.length)}${sampled}`, answers };
  });
  return `<section id="task-${t}">${head}${exactPanels(panels, runs, colors)}<details class="each"><summary>Each prompt</summary>${prompts}</details></section>`;
}

function biographySection(runs: { label: string; color: string; fields: FieldMetrics[] }[], evals: PromptEvaluation[]): string {
  const out: string[] = ['<h4>Biography fields: coverage (Figure 4a)</h4>', `<div class="wide">${fieldCoverageChart(runs)}</div>`];
  out.push('<h4>Most frequent values with counts (Table 2), coverage / entropy (Tables 7–8)</h4><div class="fields">');
  runs[0].fields.forEach((f, k) => {
    out.push(`<table class="field"><colgroup>${runs.map(() => '<col><col style="width:44px">').join('')}</colgroup>`);
    out.push(`<thead><tr><th colspan="${runs.length * 2}">${esc(f.field)}</th></tr><tr>`);
    for (const r of runs) out.push(`<th colspan="2"><span class="run" style="--c:${r.color}">${esc(r.label)}</span> ${r.fields[k].coverage} / ${num(r.fields[k].entropy)}</th>`);
    out.push('</tr></thead><tbody>');
    for (let row = 0; row < Math.max(...runs.map((r) => r.fields[k].top.length)); row++) {
      out.push('<tr>');
      for (const r of runs) {
        const v = r.fields[k].top[row];
        out.push(v ? `<td>${esc(clip(v.value, 28))}</td><td class="n">${v.count}</td>` : '<td></td><td></td>');
      }
      out.push('</tr>');
    }
    out.push('</tbody></table>');
  });
  out.push('</div>');
  const div = evals.map((e) => e.sampled?.accomplishmentDiversity);
  const complete = evals.map((e) => e.sampled?.completeBiographies);
  const each = (values: (number | undefined)[], f: (x: number) => string) =>
    runs.map((r, i) => `<span class="run" style="--c:${r.color}">${esc(r.label)}</span> <b>${values[i] === undefined ? '—' : f(values[i]!)}</b>`).join(' · ');
  if (complete.every((c) => c !== undefined)) out.push(`<p class="note">Whole biographies (all six fields): ${each(complete, pct)}.</p>`);
  if (div.some((d) => d !== undefined))
    out.push(
      `<p class="note">Unigram diversity (Figure 4b) of the accomplishments: ${each(div, (x) => num(x, 3))}; of whole texts: ${each(
        evals.map((e) => e.sampled!.unigramDiversity),
        (x) => num(x, 3),
      )}.</p>`,
    );
  return out.join('');
}

function examples(evals: PromptEvaluation[], runs: ReportRun[], colors: string[]): string {
  const cols = evals.map((e, i) =>
    e.sampled
      ? `<div><div class="run" style="--c:${colors[i]}">${esc(runs[i].label)}</div>${e.sampled.examples.map((x) => `<pre>${esc(x.trim() === '' ? '(empty)' : clip(x, 600).replace(/ ⏎ /g, '\n'))}</pre>`).join('')}</div>`
      : '',
  );
  return `<details class="examples"><summary>First samples</summary><div class="panels">${cols.join('')}</div></details>`;
}

function settingsLine(e: Evaluation): string {
  const s = e.settings;
  const parts = [`model <b>${esc(e.model)}</b> on ${esc(e.device)}`];
  if (s.samples > 0)
    parts.push(`${s.samples} samples per prompt at temperature ${s.temperature}${s.topK > 0 ? `, top-k ${s.topK}` : ''}${s.topP < 1 ? `, top-p ${s.topP}` : ''}, up to ${s.maxTokens} tokens, seed ${s.seed}`);
  else parts.push('exact figures only (no samples)');
  return parts.join(' · ');
}

function throughputLine(runs: ReportRun[], colors: string[]): string {
  const shown = runs.flatMap((r, i) =>
    r.evaluation.throughput ? [`<span class="run" style="--c:${colors[i]}">${esc(r.label)}</span> ${r.evaluation.throughput.tokensPerSecond.toFixed(1)} tokens/s`] : [],
  );
  return shown.length > 0 ? `<p class="sub">sampling speed: ${shown.join(' · ')}</p>` : '';
}

const css = `
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--good:#15803d;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:19px;margin:0 0 10px}
h4{font-size:13px;margin:18px 0 6px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.sub{color:var(--muted);margin:0 0 4px}
.legend{display:flex;gap:18px;align-items:center;margin:10px 0 18px;color:var(--muted);font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:6px}
.legend i.line{height:0;border-top:2px dashed ${TARGET_COLOR};border-radius:0;width:16px}
.legend i.dot{border-radius:50%;width:8px;height:8px;background:#fff;border:2px solid var(--ink)}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:0 0 18px}
table{border-collapse:collapse}
table.summary{width:100%;font-variant-numeric:tabular-nums;margin-bottom:14px}
.summary th,.summary td{padding:7px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:baseline;white-space:nowrap}
.summary thead th{font-size:12px;color:var(--muted);font-weight:600}
.summary tbody th{font-weight:600}
.summary tbody th .muted{display:block;margin-top:1px}
.summary a{color:inherit;text-decoration:none;border-bottom:1px dotted var(--muted)}
td .v{font-weight:600}
td.better .v:last-of-type{color:var(--good)}
td.worse .v:last-of-type{color:var(--bad)}
.arrow{color:var(--muted);margin:0 6px}
.ci{color:var(--muted);font-size:11px;margin-left:3px}
td .ci{margin:1px 0 0;font-weight:400}
td .ci .arrow{margin:0 3px}
.na,.muted{color:var(--muted);font-weight:400;font-size:12px}
.prompt{border-top:1px solid var(--line);padding-top:12px;margin-top:12px}
.prompt:first-of-type{border-top:0;margin-top:0;padding-top:0}
details.each{margin-top:14px}
details.each>summary{cursor:pointer;color:var(--muted);font-size:13px;margin-bottom:10px}
details.each[open]>summary{margin-bottom:14px}
.request{margin:0 0 10px;color:#334155;font-style:italic;white-space:pre-wrap}
.panels{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;flex:1 1 0;min-width:300px;max-width:640px}
figcaption{font-size:12px;color:#334155;margin:0 0 4px;min-height:34px}
figcaption b{font-variant-numeric:tabular-nums}
.run{font-weight:700;color:var(--c);margin-right:4px}
.run::before{content:"";display:inline-block;width:10px;height:10px;border-radius:2px;background:var(--c);margin-right:5px;vertical-align:-1px}
svg{display:block;max-width:100%;height:auto;overflow:visible}
svg .grid{stroke:#eef2f7}
svg .axis{stroke:#94a3b8}
svg .tick{fill:var(--muted);font-size:10px}
svg .label{fill:#334155;font-size:11px}
svg .count{fill:#334155;font-size:11px;font-variant-numeric:tabular-nums}
svg .target{stroke:${TARGET_COLOR};stroke-width:1.6;stroke-dasharray:5 3}
svg .dot{fill:#fff;stroke:var(--ink);stroke-width:1.4}
.wide{overflow-x:auto}
.fields{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px;align-items:start}
table.field{width:100%;font-size:12px;table-layout:fixed}
.field td{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.field th,.field td{padding:3px 6px;border-bottom:1px solid var(--line);text-align:left}
.field thead tr:first-child th{font-size:13px;text-transform:capitalize}
.field td.n{text-align:right;font-variant-numeric:tabular-nums;color:var(--muted)}
.note{color:#334155;font-size:13px}
details.examples{margin-top:12px}
details.examples summary{cursor:pointer;color:var(--muted);font-size:13px}
details.examples .panels>div{flex:1 1 420px;min-width:0}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:6px 8px;margin:6px 0;white-space:pre-wrap;word-break:break-word;font-size:12px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
footer dt{font-weight:600;color:#334155;margin-top:6px}
footer dd{margin:0 0 0 0}
`;

const definitions = `
<dl>
<dt>entropy (exact), KL(p*‖pθ), outside the set</dt>
<dd>From one exact forward over the target set T (no sampling): pθ(y) of every target y. KL(p*‖pθ) = Σ p*(y) log(p*(y)/pθ(y)) is the paper's eq. 2 with pθ as generated; the entropy is that of pθ renormalised over T, out of H(p*) (log |T| for a uniform p*); outside the set = 1 − Σ pθ(y). Charts show pθ renormalised over T, most likely first; the dashed line is p*.</dd>
<dt>expected coverage-N</dt>
<dd>Σ<sub>y∈T</sub> 1 − (1 − pθ(y))<sup>N</sup>: the number of distinct targets N samples produce on average, exactly.</dd>
<dt>coverage, entropy (sampled), valid</dt>
<dd>From N samples: each answer is the text's first {…} group (as many groups as the targets have), trimmed inside its braces. Coverage-N = distinct answers, in the set or not (eq. 4); entropy = that of the empirical distribution of the answers (eq. 3); valid = share of samples whose answer is in T (or has the format, when there is no T). Dots on the charts: each target's share of the valid samples.</dd>
<dt>unigram diversity</dt>
<dd>Distinct words ÷ words over all samples together (distinct-1); words are lower-cased runs of letters and digits. It falls with N, so compare at equal N.</dd>
<dt>intervals</dt>
<dd>[low, high] are 95% bootstrap intervals (1000 seeded resamples of the samples), re-centred on the estimate: what another run of N samples would likely give. Task figures are means over the task's prompts (as in the paper's Tables 5–6), their intervals from resampling every prompt jointly.</dd>
</dl>`;

/** The report as one HTML document. */
export function renderReport(runs: ReportRun[], options: ReportOptions = {}): string {
  if (runs.length === 0) throw new Error('renderReport needs at least one evaluation');
  const colors = runs.length === 1 ? [palette[1]] : runs.map((_, i) => palette[i % palette.length]);
  const first = runs[0].evaluation;
  const title = options.title ?? `diffuse eval: ${first.model}`;
  const date = (options.date ?? new Date()).toISOString().replace('T', ' ').slice(0, 16);
  const anyExact = first.tasks.some((t) => t.exact);
  const anySampled = first.tasks.some((t) => t.sampled);
  const legend = [
    ...runs.map((r, i) => `<span><i style="background:${colors[i]}"></i>${esc(r.label)}</span>`),
    anyExact ? `<span><i class="line"></i>desired p*</span>` : '',
    anyExact && anySampled ? `<span><i class="dot"></i>sampled share</span>` : '',
  ].join('');
  const sections = first.tasks.map((_, t) => taskSection(runs, colors, t));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>${css}</style></head>
<body><main>
<header><h1>${esc(title)}</h1>
${[...new Set(runs.map((r) => settingsLine(r.evaluation)))].map((line) => `<p class="sub">${line}</p>`).join('')}
${throughputLine(runs, colors)}
<p class="sub">${esc(date)} UTC</p>
<div class="legend">${legend}</div></header>
<section><h2>Summary</h2>${summaryTables(runs, colors)}</section>
${sections.join('\n')}
<footer><p>Measures as in Zhang et al., <i>Forcing Diffuse Distributions out of Language Models</i> (COLM 2024), §2.2.</p>${definitions}</footer>
</main></body></html>
`;
}
