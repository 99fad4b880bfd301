// constructs/monitoring.ts (Monitoring), built in a small test chart: the Grafana dashboard
// ConfigMap and the ServiceMonitor; and the dashboard it ships (dashboards/ws-admission.json):
// every query valid PromQL on the metric contract (lua/envoy/metrics-contract.ts).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parser as promql } from '@prometheus-io/lezer-promql';
import { Testing } from 'cdktf';
import { DASHBOARD_FILE, Monitoring } from '../../constructs/monitoring';
import { EXPORTED_METRICS } from '../../lua/envoy/metrics-contract';

const DASHBOARD = DASHBOARD_FILE;
const LABELS = { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' };

interface Synth {
  resource?: {
    kubernetes_config_map_v1?: Record<
      string,
      {
        metadata: { name: string; namespace: string; labels: Record<string, string>; annotations?: Record<string, string> };
        data: Record<string, string>;
      }
    >;
    kubernetes_manifest?: Record<
      string,
      {
        manifest: {
          apiVersion: string;
          kind: string;
          metadata: { namespace: string; labels: Record<string, string> };
          spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<Record<string, unknown>> };
        };
      }
    >;
  };
}

function synth(props: Partial<ConstructorParameters<typeof Monitoring>[2]> = {}): Synth {
  const out = Testing.synthScope((scope) => {
    new Monitoring(scope, 'monitoring', { namespace: 'ws-admission', envoyServiceLabels: LABELS, ...props });
  });
  return JSON.parse(out) as Synth;
}

/** Every PromQL expression in the dashboard (panel targets and templating queries). */
function queries(dash: {
  panels: Array<{ targets?: Array<{ expr: string }> }>;
  templating: { list: Array<{ query?: unknown; definition?: string }> };
}): string[] {
  const out: string[] = [];
  for (const p of dash.panels) for (const t of p.targets ?? []) out.push(t.expr);
  for (const v of dash.templating.list) if (v.definition) out.push(v.definition);
  return out;
}

describe('Grafana dashboard', () => {
  const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));

  it('parses and is a dashboard', () => {
    expect(dash.uid).toBe('ws-admission');
    expect(dash.panels.length).toBeGreaterThan(5);
    const ids = dash.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('every query names a metric the filter exports, and nothing else of ours', () => {
    const qs = queries(dash);
    expect(qs.length).toBeGreaterThan(10);
    for (const q of qs) {
      const names = q.match(/\bws_admission_[a-z_]+\b/g) ?? [];
      expect({ q, names: names.length > 0 }).toEqual({ q, names: true });
      for (const n of names) expect({ q, n, known: EXPORTED_METRICS.includes(n) }).toEqual({ q, n, known: true });
    }
  });

  it('shows every exported metric somewhere', () => {
    const all = queries(dash).join('\n');
    for (const m of EXPORTED_METRICS) expect({ m, used: new RegExp(`\\b${m}\\b`).test(all) }).toEqual({ m, used: true });
  });

  it("every query is valid PromQL (the Prometheus project's own grammar)", () => {
    for (const q of queries(dash)) {
      // Grafana substitutes its variables before Prometheus sees the query.
      // label_values(metric, label) is Grafana's: its first argument must be a PromQL selector.
      const lv = /^label_values\((.+), *\w+\)$/.exec(q);
      const concrete = (lv ? lv[1] : q).replace(/\$__rate_interval/g, '1m').replace(/\$namespace/g, '.*');
      const errors: string[] = [];
      promql.parse(concrete).iterate({
        enter: (n) => {
          if (n.type.isError) errors.push(`at ${n.from}: ${concrete.slice(Math.max(0, n.from - 20), n.from + 20)}`);
        },
      });
      expect({ q, errors }).toEqual({ q, errors: [] });
    }
  });

  it('uses rate() only on counters and never on gauges', () => {
    for (const q of queries(dash)) {
      for (const m of q.matchAll(/rate\((ws_admission_[a-z_]+)/g)) expect(m[1]).toMatch(/_total$/);
    }
  });

  it('lays the panels out without overlap, on the 24-column grid', () => {
    const cells = new Set<string>();
    for (const p of dash.panels as Array<{ id: number; gridPos: { x: number; y: number; w: number; h: number } }>) {
      const g = p.gridPos;
      expect({ id: p.id, fits: g.x >= 0 && g.x + g.w <= 24 && g.w > 0 && g.h > 0 }).toEqual({ id: p.id, fits: true });
      for (let x = g.x; x < g.x + g.w; x++)
        for (let y = g.y; y < g.y + g.h; y++) {
          expect({ id: p.id, overlaps: cells.has(`${x},${y}`) }).toEqual({ id: p.id, overlaps: false });
          cells.add(`${x},${y}`);
        }
    }
  });

  it('describes every panel, and none in terms of what is gone (host list file, one-way streams, the filter renewing)', () => {
    for (const p of dash.panels as Array<{ id: number; type: string; description?: string }>) {
      if (p.type !== 'row') expect({ id: p.id, described: (p.description ?? '').length > 20 }).toEqual({ id: p.id, described: true });
    }
    expect(JSON.stringify(dash)).not.toMatch(/one-way|phantom|host list file|probe-written|at scrape time/i);
  });
});

describe('Monitoring construct', () => {
  it('creates the dashboard ConfigMap for the Grafana sidecar and no ServiceMonitor by default', () => {
    const r = synth().resource!;
    const cms = Object.values(r.kubernetes_config_map_v1!);
    expect(cms).toHaveLength(1);
    expect(cms[0].metadata.labels.grafana_dashboard).toBe('1');
    expect(cms[0].metadata.namespace).toBe('ws-admission');
    expect(JSON.parse(cms[0].data['ws-admission.json']).uid).toBe('ws-admission');
    expect(r.kubernetes_manifest).toBeUndefined();
  });

  it('creates a ServiceMonitor when asked, selecting the Envoy metrics Service, honouring our pod label', () => {
    const r = synth({ serviceMonitor: true, serviceMonitorLabels: { release: 'kube-prometheus-stack' }, dashboard: false }).resource!;
    expect(r.kubernetes_config_map_v1).toBeUndefined();
    const sm = Object.values(r.kubernetes_manifest!)[0].manifest;
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.kind).toBe('ServiceMonitor');
    expect(sm.metadata.labels.release).toBe('kube-prometheus-stack');
    expect(sm.spec.selector.matchLabels).toEqual(LABELS);
    expect(sm.spec.endpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '15s', honorLabels: true }]);
  });

  it('puts the dashboard where the sidecar looks, in a folder if asked', () => {
    const cm = Object.values(synth({ dashboardNamespace: 'monitoring', dashboardFolder: 'Edge' }).resource!.kubernetes_config_map_v1!)[0];
    expect(cm.metadata.namespace).toBe('monitoring');
    expect(cm.metadata.annotations).toEqual({ grafana_folder: 'Edge' });
  });

  it('refuses a bad scrape interval, an empty selector, and a file that is not a dashboard', () => {
    expect(() => synth({ scrapeInterval: 'often' })).toThrow(
      'Monitoring: scrapeInterval must be a Prometheus duration such as "15s", got "often"',
    );
    expect(() => synth({ serviceMonitor: true, envoyServiceLabels: {} })).toThrow(
      'Monitoring: envoyServiceLabels must not be empty when serviceMonitor is on',
    );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dash-'));
    const bad = path.join(dir, 'x.json');
    fs.writeFileSync(bad, '{"title": "x"}');
    expect(() => synth({ dashboardFile: bad })).toThrow(
      `Monitoring: dashboardFile ${JSON.stringify(bad)} is not a Grafana dashboard (needs "uid" and "panels")`,
    );
    fs.writeFileSync(bad, '{');
    expect(() => synth({ dashboardFile: bad })).toThrow(/is not valid JSON/);
    expect(() => synth({ dashboardFile: path.join(dir, 'missing.json') })).toThrow(/cannot be read/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
