/**
 * What the local cluster's parts share: its names and ports, its state file, the options
 * of a start and the context the component files (control-plane/, kwok.ts, node/) fill
 * in while it starts, and kubectl against it.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import type { BuiltImages } from './images';
import type { Containerd } from './node/containerd';
import type * as network from './node/network';
import type { KubeletClientPki } from './node/pki';
import type { InstalledToolchain } from './toolchain';

/** The first of the ten ports a cluster uses. */
export const DEFAULT_BASE_PORT = 23400;
/** Where `npm run cluster:up` keeps its cluster (data, certificates, logs, kubeconfig). */
export const DEFAULT_DIR = process.env.WS_CLUSTER_DIR || '/tmp/ws-envoy-cluster';
/** The range this project's cluster tests may use. */
export const PORT_RANGE = { min: 23000, max: 23999 } as const;
export const CONTEXT = 'ws-local';
/** The fake node's name and the annotation kwok manages it by. */
export const NODE_NAME = 'kwok-node-0';
/** The real node's name. */
export const REAL_NODE_NAME = 'ws-node-0';
/** The cgroup (in every v1 hierarchy) the real node's pods live under. */
export const POD_CGROUP_ROOT = '/ws-node-pods';

export type NodeKind = 'kwok' | 'real';

export interface ClusterPorts {
  readonly etcdClient: number;
  readonly etcdPeer: number;
  readonly apiserver: number;
  readonly controllerManager: number;
  readonly scheduler: number;
  readonly kwok: number;
  readonly kubelet: number;
  readonly kubeProxyMetrics: number;
  readonly kubeProxyHealthz: number;
  readonly kubeRouterHealth: number;
}

export function clusterPorts(base: number): ClusterPorts {
  if (!Number.isInteger(base) || base < PORT_RANGE.min || base + 9 > PORT_RANGE.max) {
    throw new Error(
      `cluster: basePort must be an integer with basePort..basePort+9 inside ${PORT_RANGE.min}-${PORT_RANGE.max}, got ${base}`,
    );
  }
  return {
    etcdClient: base,
    etcdPeer: base + 1,
    apiserver: base + 2,
    controllerManager: base + 3,
    scheduler: base + 4,
    kwok: base + 5,
    kubelet: base + 6,
    kubeProxyMetrics: base + 7,
    kubeProxyHealthz: base + 8,
    kubeRouterHealth: base + 9,
  };
}

export interface ClusterState {
  readonly dir: string;
  readonly kind: NodeKind;
  /** The node's name (kwok's fake one, or the real one). */
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly ports: ClusterPorts;
  /** https://<address>:<port>, its self-signed CA (PEM file) and the admin's bearer token. */
  readonly server: string;
  readonly caFile: string;
  readonly token: string;
  /** Process ids we started (each a `timeout` wrapping the component), in start order. */
  readonly pids: { readonly [component: string]: number };
  /** The real node only: what to undo at stop. */
  readonly real?: {
    readonly network: network.NetworkState;
    /** Network namespaces (/run/netns) that existed before the node: the others are its pods'. */
    readonly netnsBefore: readonly string[];
    readonly containerd?: Containerd;
    readonly kubeProxy: string;
  };
}

export const STATE_FILE = 'cluster.json';

export interface StartOptions {
  readonly toolchain: InstalledToolchain;
  /** Working folder (data, certificates, logs, kubeconfig); created, must not hold a running cluster. */
  readonly dir: string;
  /** @default DEFAULT_BASE_PORT */
  readonly basePort?: number;
  /** Every process is killed after this long even if nobody stops it. @default 3600 */
  readonly lifetimeSeconds?: number;
  /** @default 'kwok' */
  readonly kind?: NodeKind;
  /** The node's images (tools/cluster/images.ts), for `real`. */
  readonly images?: BuiltImages;
  /** Progress lines (each step of a real node takes seconds). @default - none */
  readonly progress?: (line: string) => void;
}

export function kubectl(
  t: InstalledToolchain,
  kubeconfig: string,
  args: readonly string[],
  timeoutMs = 60_000,
  input?: string,
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(t.bin.kubectl, ['--kubeconfig', kubeconfig, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
    input,
  });
  return { status: r.status ?? 124, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** What the component functions share while a cluster starts. */
export interface Starting {
  readonly o: StartOptions;
  readonly dir: string;
  readonly ports: ClusterPorts;
  readonly lifetime: number;
  readonly address: string;
  /** https://<address>:<port> of the API server, its certificate (PEM) and the admin's kubeconfig. */
  readonly server: string;
  readonly caFile: string;
  readonly kubeconfig: string;
  readonly pids: Record<string, number>;
  readonly tokens: { readonly admin: string; readonly node: string; readonly proxy: string };
  readonly log: (name: string) => string;
  readonly save: () => void;
  /** The API server's client certificate for the kubelet (real node). */
  kubeletPki?: KubeletClientPki;
}

/** A kubeconfig for one token (the admin's, the node's, kube-proxy's). */
export function writeKubeconfig(file: string, server: string, caFile: string, user: string, token: string): void {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': CONTEXT,
    clusters: [{ name: CONTEXT, cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: CONTEXT, context: { cluster: CONTEXT, user } }],
  };
  fs.writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

/** Whether node `name` reports the Ready condition True. */
export function nodeIsReady(s: Starting, name: string): boolean {
  const jsonpath = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}';
  return kubectl(s.o.toolchain, s.kubeconfig, ['get', 'node', name, '-o', jsonpath]).stdout === 'True';
}
