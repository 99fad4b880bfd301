/**
 * kube-router's network policy controller (its firewall alone: no routing, no service
 * proxy) as the real node's NetworkPolicy engine: iptables and ipset rules for the pods
 * on this node, removed by cleanupKubeRouter.
 * @see https://www.kube-router.io/docs/user-guide/#command-line-options
 */
import { spawnSync } from 'child_process';
import { startProcess } from '../process';
import { NODE_NETWORK } from './network';

export interface KubeRouterOptions {
  readonly dir: string;
  readonly binary: string;
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly healthPort: number;
  readonly lifetimeSeconds: number;
}

export function startKubeRouter(o: KubeRouterOptions, pids: Record<string, number>): void {
  pids.kubeRouter = startProcess(
    o.dir,
    'kube-router',
    o.binary,
    [
      '--kubeconfig',
      o.kubeconfig,
      '--hostname-override',
      o.nodeName,
      '--run-firewall=true',
      '--run-router=false',
      '--run-service-proxy=false',
      '--service-cluster-ip-range',
      NODE_NETWORK.serviceCidr,
      '--health-port',
      String(o.healthPort),
      '--metrics-port',
      '0',
      // Policies take effect within a second of a change (the default resync is minutes).
      '--iptables-sync-period',
      '5s',
      '--v',
      '1',
    ],
    o.lifetimeSeconds,
  );
}

/** Splits one line of `iptables -S` into arguments (its comments are double-quoted). */
export function iptablesArgs(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]));
}

/** The chains kube-router's firewall makes (its own prefixes). */
const OWN_CHAIN = /^KUBE-(ROUTER-|POD-FW-|NWPLCY-|SRC-|DST-)/;

/**
 * Removes every iptables rule and ipset kube-router's firewall made. Its own
 * `--cleanup-config` (v2.1.0) leaves the rules in place and then crashes in the service
 * proxy's cleanup, which never ran here: so the rules are removed by their chains' names.
 */
export function cleanupKubeRouter(): void {
  for (const bin of ['iptables', 'ip6tables']) {
    const ipt = (args: readonly string[]) => spawnSync(bin, ['-w', '5', '-t', 'filter', ...args], { encoding: 'utf8', timeout: 30_000 });
    const lines = (ipt(['-S']).stdout ?? '').split('\n');
    for (const l of lines.filter((x) => /^-A (INPUT|FORWARD|OUTPUT) /.test(x) && / -j KUBE-ROUTER-/.test(x))) {
      ipt(['-D', ...iptablesArgs(l).slice(1)]);
    }
    const chains = lines
      .filter((x) => x.startsWith('-N '))
      .map((x) => x.slice(3).trim())
      .filter((c) => OWN_CHAIN.test(c));
    for (const c of chains) ipt(['-F', c]);
    for (const c of chains) ipt(['-X', c]);
  }
  const sets = (spawnSync('ipset', ['list', '-n'], { encoding: 'utf8', timeout: 30_000 }).stdout ?? '')
    .split('\n')
    .filter((n) => n.startsWith('KUBE-'));
  for (const set of sets) spawnSync('ipset', ['destroy', set], { timeout: 30_000 });
}
