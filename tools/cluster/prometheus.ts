/**
 * A real Prometheus (the toolchain's: Debian's is built without Kubernetes service
 * discovery, see toolchain.json) beside the real node, configured the way the
 * stack's docs tell an operator (docs/operations.md, "Prometheus"): the usual
 * `kubernetes-pods` job, which discovers pods through the API server and keeps those
 * whose `prometheus.io/scrape` annotation is "true", at their `prometheus.io/port` and
 * `prometheus.io/path`, with `honor_labels: true` (the stack's series carry their own
 * `pod` label: the backend pod). Listens on 127.0.0.1 only.
 * @see https://prometheus.io/docs/prometheus/latest/configuration/configuration/#kubernetes_sd_config
 */
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import { stringify } from 'yaml';
import { ClusterState, STATE_FILE } from './common';
import { startProcess, stopGroups, waitFor } from './process';

export interface Prometheus {
  readonly url: string;
  readonly pid: number;
}

/** The scrape configuration (prometheus.yml) for `cluster`, its token in `tokenFile`. */
export function prometheusConfig(cluster: ClusterState, tokenFile: string, scrapeInterval = '2s'): object {
  return {
    global: { scrape_interval: scrapeInterval, evaluation_interval: scrapeInterval },
    scrape_configs: [
      {
        job_name: 'kubernetes-pods',
        honor_labels: true,
        kubernetes_sd_configs: [
          {
            role: 'pod',
            api_server: cluster.server,
            authorization: { credentials_file: tokenFile },
            tls_config: { ca_file: cluster.caFile },
          },
        ],
        relabel_configs: [
          { source_labels: ['__meta_kubernetes_pod_annotation_prometheus_io_scrape'], action: 'keep', regex: 'true' },
          {
            source_labels: ['__meta_kubernetes_pod_annotation_prometheus_io_path'],
            action: 'replace',
            target_label: '__metrics_path__',
            regex: '(.+)',
          },
          {
            source_labels: ['__address__', '__meta_kubernetes_pod_annotation_prometheus_io_port'],
            action: 'replace',
            regex: '([^:]+)(?::\\d+)?;(\\d+)',
            replacement: '$1:$2',
            target_label: '__address__',
          },
          { source_labels: ['__meta_kubernetes_namespace'], action: 'replace', target_label: 'namespace' },
          { source_labels: ['__meta_kubernetes_pod_name'], action: 'replace', target_label: 'pod' },
        ],
      },
    ],
  };
}

export async function startPrometheus(binary: string, cluster: ClusterState, port: number, lifetimeSeconds: number): Promise<Prometheus> {
  const dir = path.join(cluster.dir, 'prometheus');
  fs.mkdirSync(dir, { recursive: true });
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, cluster.token, { mode: 0o600 });
  const config = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(config, stringify(prometheusConfig(cluster, tokenFile)));
  const pid = startProcess(
    cluster.dir,
    'prometheus',
    binary,
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    lifetimeSeconds,
  );
  // Recorded with the cluster's processes, so cluster:down stops it too.
  const stateFile = path.join(cluster.dir, STATE_FILE);
  if (fs.existsSync(stateFile)) {
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as ClusterState;
    fs.writeFileSync(stateFile, `${JSON.stringify({ ...state, pids: { ...state.pids, prometheus: pid } }, null, 2)}\n`, { mode: 0o600 });
  }
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    'prometheus',
    60_000,
    async () => (await get(`${url}/-/ready`)).status === 200,
    path.join(cluster.dir, 'logs', 'prometheus.log'),
  );
  return { url, pid };
}

export async function stopPrometheus(p: Prometheus): Promise<void> {
  await stopGroups([p.pid]);
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

export interface Sample {
  readonly metric: { readonly [label: string]: string };
  readonly value: [number, string];
}

/** An instant query; throws with Prometheus' error for a query it refuses. */
export async function query(p: Prometheus, promql: string): Promise<Sample[]> {
  const r = await get(`${p.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = JSON.parse(r.body) as { status: string; error?: string; data?: { resultType: string; result: Sample[] } };
  if (body.status !== 'success') throw new Error(`prometheus refused ${promql}: ${body.error}`);
  if (body.data!.resultType !== 'vector') throw new Error(`prometheus: ${promql} is a ${body.data!.resultType}, not a vector`);
  return body.data!.result;
}

export interface Target {
  readonly labels: { readonly [label: string]: string };
  readonly health: string;
  readonly scrapeUrl: string;
}

export async function activeTargets(p: Prometheus): Promise<Target[]> {
  const r = await get(`${p.url}/api/v1/targets?state=active`);
  return (JSON.parse(r.body) as { data: { activeTargets: Target[] } }).data.activeTargets;
}
