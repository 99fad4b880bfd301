/**
 * A local Kubernetes cluster for the stack, one of two kinds:
 *
 * - `real` (the default of `npm run cluster:up`, and the node suite): etcd,
 *   kube-apiserver, kube-controller-manager, kube-scheduler and one real node:
 *   containerd + runc, kubelet, kube-proxy (nftables), kube-router's NetworkPolicy
 *   firewall and CoreDNS, all on a bridge of its own (node/network.ts: 10.244.0.1), with
 *   the images of tools/cluster/images.ts. Root only, one per machine.
 * - `kwok` (the API suite, __tests__/cluster/apply.test.ts): the same control plane on
 *   127.0.0.1 and a kwok fake node, so every profile rolls out without a container
 *   runtime (also those whose images exist nowhere here).
 *
 * Every process is started under `timeout(1)`, so none outlives its lifetime even if
 * nobody stops it. Ports: `basePort` .. `basePort + 9` (default 23400; this project's
 * cluster tests own 23000-23999, other tests use 21000-21999).
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import {
  ClusterPorts,
  ClusterState,
  clusterPorts,
  DEFAULT_BASE_PORT,
  kubectl,
  NODE_NAME,
  NodeKind,
  PORT_RANGE,
  REAL_NODE_NAME,
  StartOptions,
  Starting,
  STATE_FILE,
  writeKubeconfig,
} from './common';
import { addApiserver } from './control-plane/apiserver';
import { addControllerManager } from './control-plane/controller-manager';
import { addEtcd } from './control-plane/etcd';
import { addScheduler } from './control-plane/scheduler';
import { addKwok } from './kwok';
import * as network from './node/network';
import { NODE_NETWORK } from './node/network';
import { addRealNode, listNetns, RealNodeParts, stopRealNode } from './node/node';
import { portFree, stopGroups, waitFor } from './process';

/** Refuses a start that cannot work: a cluster already in `dir`, a real node without root, a port taken. */
async function checkCanStart(dir: string, kind: NodeKind, ports: ClusterPorts): Promise<void> {
  if (fs.existsSync(path.join(dir, STATE_FILE))) {
    throw new Error(`cluster: ${dir} already holds a cluster (${STATE_FILE}); stop it first (npm run cluster:down)`);
  }
  if (kind === 'real' && process.getuid?.() !== 0) {
    throw new Error(
      'cluster: a real node needs root (containerd, kubelet, kube-proxy, the bridge); run as root, or start a kwok cluster (--kwok)',
    );
  }
  for (const [what, port] of Object.entries(ports) as [string, number][]) {
    if (!(await portFree(port)))
      throw new Error(
        `cluster: port ${port} (${what}) on 127.0.0.1 is taken; stop what holds it or choose another --base-port in ${PORT_RANGE.min}-${PORT_RANGE.max}`,
      );
  }
}

/** What a start has brought up so far, and the state file that records it (what stopCluster undoes). */
class Start {
  readonly real: RealNodeParts = {};
  readonly netnsBefore = listNetns();
  readonly s: Starting;

  constructor(o: StartOptions, kind: NodeKind, dir: string, ports: ClusterPorts) {
    const address = kind === 'real' ? NODE_NETWORK.nodeIp : '127.0.0.1';
    this.s = {
      o: { ...o, kind },
      dir,
      ports,
      lifetime: o.lifetimeSeconds ?? 3600,
      address,
      server: `https://${address}:${ports.apiserver}`,
      caFile: path.join(dir, 'pki', 'apiserver.crt'),
      kubeconfig: path.join(dir, 'kubeconfig'),
      pids: {},
      tokens: { admin: randomBytes(24).toString('hex'), node: randomBytes(24).toString('hex'), proxy: randomBytes(24).toString('hex') },
      log: (n) => path.join(dir, 'logs', `${n}.log`),
      save: () => fs.writeFileSync(path.join(dir, STATE_FILE), `${JSON.stringify(this.state(), null, 2)}\n`, { mode: 0o600 }),
    };
  }

  state(): ClusterState {
    const { s, real } = this;
    return {
      dir: s.dir,
      kind: s.o.kind!,
      nodeName: s.o.kind === 'real' ? REAL_NODE_NAME : NODE_NAME,
      kubeconfig: s.kubeconfig,
      ports: s.ports,
      server: s.server,
      caFile: s.caFile,
      token: s.tokens.admin,
      pids: s.pids,
      ...(real.network
        ? {
            real: {
              network: real.network,
              netnsBefore: this.netnsBefore,
              containerd: real.containerd,
              kubeProxy: s.o.toolchain.bin['kube-proxy'],
            },
          }
        : {}),
    };
  }
}

/** Brings the cluster up and returns once its node is Ready. Stops what it started if any step fails. */
export async function startCluster(o: StartOptions): Promise<ClusterState> {
  const kind = o.kind ?? 'kwok';
  const ports = clusterPorts(o.basePort ?? DEFAULT_BASE_PORT);
  const dir = path.resolve(o.dir);
  await checkCanStart(dir, kind, ports);
  fs.mkdirSync(path.join(dir, 'pki'), { recursive: true });
  const start = new Start(o, kind, dir, ports);
  const s = start.s;
  try {
    if (kind === 'real') {
      start.real.network = network.up(dir);
      s.save();
    }
    await addEtcd(s);
    await addApiserver(s);
    writeKubeconfig(s.kubeconfig, s.server, s.caFile, 'admin', s.tokens.admin);
    addControllerManager(s);
    addScheduler(s);
    s.save();
    await (kind === 'real' ? addRealNode(s, start.real) : addKwok(s));
    s.save();
    // Pods need the namespace's "default" ServiceAccount: the controller-manager makes it.
    await waitFor(
      'ServiceAccount default/default (controller-manager)',
      60_000,
      async () => kubectl(o.toolchain, s.kubeconfig, ['-n', 'default', 'get', 'serviceaccount', 'default']).status === 0,
      s.log('kube-controller-manager'),
    );
    return start.state();
  } catch (e) {
    await stopCluster(start.state()).catch(() => undefined);
    throw e;
  }
}

/** Stops the processes of `state` (their process groups, newest first) and waits until they are gone; a real node is taken down too. */
export async function stopCluster(state: ClusterState, removeDir = false): Promise<void> {
  await stopGroups(Object.values(state.pids).reverse());
  if (state.real) await stopRealNode(state);
  fs.rmSync(path.join(state.dir, STATE_FILE), { force: true });
  if (removeDir) fs.rmSync(state.dir, { recursive: true, force: true });
}

export function readState(dir: string): ClusterState {
  const file = path.join(path.resolve(dir), STATE_FILE);
  if (!fs.existsSync(file)) throw new Error(`cluster: no cluster in ${dir} (${file} is missing)`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterState;
}
