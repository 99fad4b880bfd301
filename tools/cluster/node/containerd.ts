/**
 * containerd (Debian's, with its CRI plugin) for the real node: a configuration of its own
 * (root, state and socket in the cluster's folder, runc with cgroupfs, the CNI network of
 * network.ts, the pause stand-in as the sandbox image), started in a cgroup of its own so
 * that it and every shim it forks can be stopped by process id, and the node's images
 * imported from their archives (no registry is reachable).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BuiltImages } from '../images';
import { startProcess, waitFor } from '../process';
import { NODE_NETWORK } from './network';

/** The CRI namespace kubelet's containers live in. */
export const CRI_NAMESPACE = 'k8s.io';

export interface Containerd {
  readonly socket: string;
  readonly root: string;
  readonly state: string;
  /** The cgroup (v1 pids hierarchy) holding containerd and its shims. */
  readonly cgroup: string;
}

type TomlValue = string | number | boolean | { readonly [key: string]: TomlValue };

/** TOML of nested tables of scalars (all containerd's config needs). */
export function toToml(table: { readonly [key: string]: TomlValue }, prefix = ''): string {
  const scalars: string[] = [];
  const tables: string[] = [];
  for (const [k, v] of Object.entries(table)) {
    const key = /^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k);
    if (typeof v === 'object') tables.push(toToml(v, prefix ? `${prefix}.${key}` : key));
    else scalars.push(`${key} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
  }
  const head = prefix && scalars.length > 0 ? [`[${prefix}]`] : [];
  return [...head, ...scalars, ...(scalars.length > 0 ? [''] : []), ...tables].join('\n');
}

export function containerdConfig(dir: string, cniConfDir: string, sandboxImage: string): { readonly [key: string]: TomlValue } {
  const c = path.join(dir, 'containerd');
  const cri = 'io.containerd.grpc.v1.cri';
  return {
    version: 2,
    root: path.join(c, 'root'),
    state: path.join(c, 'state'),
    grpc: { address: path.join(c, 'containerd.sock') },
    ttrpc: { address: path.join(c, 'containerd.sock.ttrpc') },
    debug: { level: 'warn' },
    plugins: {
      [cri]: {
        sandbox_image: sandboxImage,
        // exec/attach/port-forward streams: the kubelet proxies them, on loopback only.
        stream_server_address: '127.0.0.1',
        stream_server_port: '0',
        // This kernel has no AppArmor; no SELinux either.
        disable_apparmor: true,
        // Root here lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below
        // 0, and the kubelet asks -998 for every pod sandbox (runc then fails: "can't get
        // final child's PID from pipe"). Keep every container at containerd's own (0).
        restrict_oom_score_adj: true,
        enable_selinux: false,
        containerd: {
          snapshotter: 'overlayfs',
          default_runtime_name: 'runc',
          runtimes: { runc: { runtime_type: 'io.containerd.runc.v2', options: { BinaryName: '/usr/sbin/runc', SystemdCgroup: false } } },
        },
        cni: { bin_dir: NODE_NETWORK.cniBinDir, conf_dir: cniConfDir, max_conf_num: 1 },
      },
      'io.containerd.internal.v1.opt': { path: path.join(c, 'opt') },
    },
  };
}

export function ctr(d: Containerd, args: readonly string[], timeoutMs = 5 * 60_000): { status: number; out: string } {
  const r = spawnSync('ctr', ['--address', d.socket, '--namespace', CRI_NAMESPACE, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status ?? 124, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

export async function startContainerd(
  dir: string,
  cniConfDir: string,
  images: BuiltImages,
  lifetimeSeconds: number,
  pids: Record<string, number>,
): Promise<Containerd> {
  const c = path.join(dir, 'containerd');
  fs.mkdirSync(c, { recursive: true });
  const cgroup = `/sys/fs/cgroup/pids/ws-node-runtime-${path.basename(dir)}`;
  fs.mkdirSync(cgroup, { recursive: true });
  const d: Containerd = { socket: path.join(c, 'containerd.sock'), root: path.join(c, 'root'), state: path.join(c, 'state'), cgroup };
  const config = path.join(c, 'config.toml');
  fs.writeFileSync(config, toToml(containerdConfig(dir, cniConfDir, images.images.pause.ref)));
  pids.containerd = startProcess(dir, 'containerd', 'containerd', ['--config', config], lifetimeSeconds, { cgroup });
  await waitFor('containerd', 30_000, async () => ctr(d, ['version'], 5000).status === 0, path.join(dir, 'logs', 'containerd.log'));
  for (const { ref, archive } of Object.values(images.images)) {
    const r = ctr(d, ['images', 'import', archive]);
    if (r.status !== 0 || !ctr(d, ['images', 'ls', '-q']).out.split('\n').includes(ref)) {
      throw new Error(`cluster: containerd did not import ${ref} from ${archive}: ${r.out.trim()}`);
    }
  }
  return d;
}

/** Every process in the runtime's cgroup (containerd, its shims), by pid. */
export function runtimePids(d: Containerd): number[] {
  const file = path.join(d.cgroup, 'cgroup.procs');
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
}
