import * as fs from 'fs';
import * as path from 'path';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import { Manifest } from '@cdktf/provider-kubernetes/lib/manifest';
import { Construct } from 'constructs';
import { escapeTerraformTemplate } from './filter-config';
import { METRICS_PATH } from '../envoy/bootstrap';
import { PART_OF } from './names';

/** The dashboard shipped with the repository. */
export const DASHBOARD_FILE = path.join(__dirname, '..', 'dashboards', 'ws-admission.json');

export interface MonitoringProps {
  /** Namespace of the Envoy pods (and of the ServiceMonitor). */
  readonly namespace: string;
  /**
   * Labels of the Service that exposes the Envoy metrics port; the ServiceMonitor
   * selects on them.
   */
  readonly envoyServiceLabels: { readonly [key: string]: string };
  /**
   * Name of the Service port that serves `/metrics` (the Envoy metrics listener, 9901).
   * @default 'metrics'
   */
  readonly metricsPortName?: string;
  /**
   * Create the Grafana dashboard ConfigMap (label `grafana_dashboard: "1"`, which the
   * Grafana sidecar of kube-prometheus-stack / the grafana chart watches).
   * @default true
   * @see https://github.com/grafana/helm-charts/tree/main/charts/grafana#sidecar-for-dashboards
   */
  readonly dashboard?: boolean;
  /**
   * Namespace of the dashboard ConfigMap (the sidecar may watch only its own namespace).
   * @default - `namespace`
   */
  readonly dashboardNamespace?: string;
  /**
   * Grafana folder for the dashboard (annotation read by the sidecar when
   * `folderAnnotation` is set to `grafana_folder`).
   * @default - no annotation (the sidecar's default folder)
   */
  readonly dashboardFolder?: string;
  /**
   * The dashboard JSON file.
   * @default DASHBOARD_FILE (dashboards/ws-admission.json)
   */
  readonly dashboardFile?: string;
  /**
   * Create a Prometheus Operator ServiceMonitor. Off by default: `kubernetes_manifest`
   * needs the `monitoring.coreos.com/v1` CRD to exist at plan time, so a cluster without
   * the Prometheus Operator could not even be planned. Without it, Prometheus finds the
   * pods through their `prometheus.io/*` annotations.
   * @default false
   * @see https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor
   */
  readonly serviceMonitor?: boolean;
  /**
   * Extra labels on the ServiceMonitor, for a Prometheus whose `serviceMonitorSelector`
   * wants them (kube-prometheus-stack: `release: <helm release name>`).
   * @default {}
   */
  readonly serviceMonitorLabels?: { readonly [key: string]: string };
  /**
   * Scrape interval.
   * @default '15s'
   */
  readonly scrapeInterval?: string;
}

/** Labels of the dashboard ConfigMap and the ServiceMonitor. */
const LABELS = {
  'app.kubernetes.io/part-of': PART_OF,
  'app.kubernetes.io/component': 'monitoring',
  'app.kubernetes.io/managed-by': 'cdktf',
};

/**
 * Monitoring wiring for the admission metrics: the Grafana dashboard as a ConfigMap
 * for the Grafana sidecar, and optionally a ServiceMonitor.
 *
 * The ServiceMonitor sets `honorLabels: true`: our series carry a `pod` label (the
 * backend pod, `ip:port`) that would otherwise collide with the target label `pod`
 * (the Envoy pod) and be renamed `exported_pod`, breaking the dashboard.
 */
export class Monitoring extends Construct {
  public readonly dashboardEnabled: boolean;
  public readonly serviceMonitorEnabled: boolean;
  public readonly dashboardConfigMap?: ConfigMapV1;
  public readonly serviceMonitorManifest?: Manifest;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    this.dashboardEnabled = props.dashboard ?? true;
    this.serviceMonitorEnabled = props.serviceMonitor ?? false;
    const scrapeInterval = props.scrapeInterval ?? '15s';
    if (!/^\d+(ms|s|m|h)$/.test(scrapeInterval)) {
      throw new Error(`Monitoring: scrapeInterval must be a Prometheus duration such as "15s", got ${JSON.stringify(scrapeInterval)}`);
    }
    if (Object.keys(props.envoyServiceLabels).length === 0 && this.serviceMonitorEnabled) {
      throw new Error(
        'Monitoring: envoyServiceLabels must not be empty when serviceMonitor is on (an empty selector would scrape every Service in the namespace)',
      );
    }
    if (this.dashboardEnabled) this.dashboardConfigMap = this.renderDashboard(props);
    if (this.serviceMonitorEnabled) this.serviceMonitorManifest = this.renderServiceMonitor(props, scrapeInterval);
  }

  private renderDashboard(props: MonitoringProps): ConfigMapV1 {
    const json = readDashboard(props.dashboardFile ?? DASHBOARD_FILE);
    return new ConfigMapV1(this, 'dashboard', {
      metadata: {
        name: 'ws-admission-dashboard',
        namespace: props.dashboardNamespace ?? props.namespace,
        labels: { ...LABELS, grafana_dashboard: '1' },
        annotations: props.dashboardFolder ? { grafana_folder: props.dashboardFolder } : undefined,
      },
      // Grafana's own `${datasource}` variables would otherwise be read by Terraform as
      // interpolations (and fail the plan); escaped, Terraform writes them as is.
      data: { 'ws-admission.json': escapeTerraformTemplate(json) },
    });
  }

  private renderServiceMonitor(props: MonitoringProps, scrapeInterval: string): Manifest {
    return new Manifest(this, 'service-monitor', {
      manifest: {
        apiVersion: 'monitoring.coreos.com/v1',
        kind: 'ServiceMonitor',
        metadata: {
          name: 'ws-envoy',
          namespace: props.namespace,
          labels: { ...LABELS, ...(props.serviceMonitorLabels ?? {}) },
        },
        spec: {
          selector: { matchLabels: { ...props.envoyServiceLabels } },
          namespaceSelector: { matchNames: [props.namespace] },
          endpoints: [{ port: props.metricsPortName ?? 'metrics', path: METRICS_PATH, interval: scrapeInterval, honorLabels: true }],
        },
      },
    });
  }
}

/** Reads and checks the dashboard file; the ConfigMap gets it re-serialised (stable, compact). */
function readDashboard(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`Monitoring: dashboardFile ${JSON.stringify(file)} cannot be read (${(err as Error).message})`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`Monitoring: dashboardFile ${JSON.stringify(file)} is not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || !('panels' in parsed) || !('uid' in parsed)) {
    throw new Error(`Monitoring: dashboardFile ${JSON.stringify(file)} is not a Grafana dashboard (needs "uid" and "panels")`);
  }
  return JSON.stringify(parsed);
}
