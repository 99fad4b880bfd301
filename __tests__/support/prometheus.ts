import { spawnSync } from 'child_process';

/**
 * The Prometheus project's own text-format parser (python3-prometheus-client,
 * `prometheus_client.parser.text_string_to_metric_families`): what a scrape must pass.
 * Missing, it fails the test (`.ci/run` installs it), it never falls back.
 */
const PYTHON = process.env.TEST_PROM_PYTHON ?? '/usr/bin/python3';
const PARSE = `
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.stderr.write("python3-prometheus-client is missing: apt-get install python3-prometheus-client\\n")
    sys.exit(3)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
`;

export interface Sample {
  readonly family: string;
  readonly type: string;
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

export function parsePrometheus(text: string): Sample[] {
  const r = spawnSync(PYTHON, ['-c', PARSE], { input: text, encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run ${PYTHON}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`the Prometheus text parser refused the output (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Sample[];
}

/** The value of the one sample with exactly these labels, or undefined. */
export function sampleValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  const s = samples.find(
    (x) => x.name === name && want.length === Object.keys(x.labels).length && want.every(([k, v]) => x.labels[k] === v),
  );
  return s?.value;
}
