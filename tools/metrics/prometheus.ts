/**
 * Prometheus text exposition format, parsed with `parse-prometheus-text-format`
 * (a small, dependency-light parser of the official text format: HELP/TYPE lines,
 * label escaping, summaries and histograms). No regexes over the exposition here.
 */
// The package ships no types; this is its documented shape.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- no type declarations to import
const parseText = require('parse-prometheus-text-format') as (text: string) => RawFamily[];

interface RawFamily {
  name: string;
  help: string;
  type: string;
  metrics: Array<{ value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }>;
}

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly help: string;
  /** counter | gauge | summary | histogram | untyped */
  readonly type: string;
  readonly samples: readonly Sample[];
}

export class ExpositionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpositionError';
  }
}

/** Parses a whole exposition; throws ExpositionError (never a raw parser error) on malformed input. */
export function parseExposition(text: string): MetricFamily[] {
  let raw: RawFamily[];
  try {
    raw = parseText(text);
  } catch (err) {
    throw new ExpositionError(`not in Prometheus text format: ${err instanceof Error ? err.message : String(err)}`);
  }
  return raw.map((f) => ({
    name: f.name,
    help: f.help,
    type: f.type.toLowerCase(),
    samples: f.metrics.filter((m) => m.value !== undefined).map((m) => ({ name: f.name, labels: m.labels ?? {}, value: Number(m.value) })),
  }));
}

/** Index of samples by metric name. */
export class SampleSet {
  private readonly byName = new Map<string, Sample[]>();

  constructor(families: readonly MetricFamily[]) {
    for (const f of families) {
      const list = this.byName.get(f.name) ?? [];
      list.push(...f.samples);
      this.byName.set(f.name, list);
    }
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  /** True when the family was declared, even with no series (e.g. a per-worker counter nobody incremented yet). */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  all(name: string): readonly Sample[] {
    return this.byName.get(name) ?? [];
  }

  /** The value of a metric without labels (or the sum over its series), undefined if absent. */
  scalar(name: string): number | undefined {
    const s = this.all(name);
    if (s.length === 0) return undefined;
    return s.reduce((a, b) => a + b.value, 0);
  }

  /** Values grouped by one label. */
  byLabel(name: string, label: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const s of this.all(name)) {
      const key = s.labels[label] ?? '';
      out.set(key, (out.get(key) ?? 0) + s.value);
    }
    return out;
  }
}
