/**
 * The real node's network, all of it this cluster's own: a Linux bridge whose address is
 * the node's (pods, the API server and the NodePorts live on it, never on loopback or the
 * machine's own interfaces), the CNI configuration containerd uses for pods (Debian's
 * bridge/host-local/portmap plugins), and a guard that keeps pod traffic inside the
 * cluster. Everything here is undone by `down`.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const NODE_NETWORK = {
  bridge: 'wsnode0',
  /** The node's address (the bridge's), the pods' gateway. */
  nodeIp: '10.244.0.1',
  podCidr: '10.244.0.0/24',
  serviceCidr: '10.96.0.0/16',
  /** The kube-dns Service. */
  dnsIp: '10.96.0.10',
  /** Debian's containernetworking-plugins. */
  cniBinDir: '/usr/lib/cni',
} as const;

/** Our nftables table: pods may not reach anything outside the cluster's own addresses. */
const GUARD_TABLE = 'ws-node-guard';
const SYSCTLS = ['net/ipv4/ip_forward', 'net/bridge/bridge-nf-call-iptables'] as const;

function sh(cmd: string, args: readonly string[], ok = false): string {
  const r = spawnSync(cmd, [...args], { encoding: 'utf8', timeout: 30_000 });
  if (!ok && (r.error || r.status !== 0)) {
    throw new Error(`cluster: ${cmd} ${args.join(' ')} failed: ${(r.stderr || String(r.error)).trim()}`);
  }
  return r.stdout ?? '';
}

export function bridgeExists(): boolean {
  return fs.existsSync(`/sys/class/net/${NODE_NETWORK.bridge}`);
}

/** What `up` changed, so `down` can put it back. */
export interface NetworkState {
  readonly sysctls: { readonly [key: string]: string };
}

/** The bridge with the node's address, forwarding on, bridged traffic through netfilter, the guard. */
export function up(dir: string): NetworkState {
  if (bridgeExists()) {
    throw new Error(
      `cluster: the bridge ${NODE_NETWORK.bridge} exists: another real node runs on this machine (only one can: kube-proxy's and kube-router's rules are the machine's); stop it first (npm run cluster:down)`,
    );
  }
  const sysctls: Record<string, string> = {};
  for (const s of SYSCTLS) sysctls[s] = fs.readFileSync(`/proc/sys/${s}`, 'utf8').trim();
  sh('ip', ['link', 'add', NODE_NETWORK.bridge, 'type', 'bridge']);
  sh('ip', ['addr', 'add', `${NODE_NETWORK.nodeIp}/${NODE_NETWORK.podCidr.split('/')[1]}`, 'dev', NODE_NETWORK.bridge]);
  sh('ip', ['link', 'set', NODE_NETWORK.bridge, 'up']);
  // Routing between pods and to Service addresses; kube-proxy and kube-router see bridged packets.
  for (const s of SYSCTLS) fs.writeFileSync(`/proc/sys/${s}`, '1');
  const guard = path.join(dir, 'guard.nft');
  fs.writeFileSync(
    guard,
    [
      `table inet ${GUARD_TABLE} {`,
      '  chain forward {',
      '    type filter hook forward priority filter; policy accept;',
      `    iifname "${NODE_NETWORK.bridge}" oifname != "${NODE_NETWORK.bridge}" counter drop comment "pods stay inside the cluster"`,
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  sh('nft', ['-f', guard]);
  return { sysctls };
}

/** The CNI network of the pods: the bridge, host-local addresses from the pod range, port maps. */
export function writeCniConfig(dir: string): string {
  const confDir = path.join(dir, 'cni', 'net.d');
  fs.mkdirSync(confDir, { recursive: true });
  const conf = {
    cniVersion: '1.0.0',
    name: 'ws-node',
    plugins: [
      {
        type: 'bridge',
        bridge: NODE_NETWORK.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: NODE_NETWORK.podCidr, gateway: NODE_NETWORK.nodeIp }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: path.join(dir, 'cni', 'ipam'),
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  fs.writeFileSync(path.join(confDir, '10-ws-node.conflist'), `${JSON.stringify(conf, null, 2)}\n`);
  return confDir;
}

/** Undoes `up` (idempotent): the guard, the bridge, the sysctls as they were. */
export function down(state: NetworkState | undefined): void {
  sh('nft', ['delete', 'table', 'inet', GUARD_TABLE], true);
  if (bridgeExists()) sh('ip', ['link', 'del', NODE_NETWORK.bridge], true);
  for (const [s, v] of Object.entries(state?.sysctls ?? {})) fs.writeFileSync(`/proc/sys/${s}`, v);
}
