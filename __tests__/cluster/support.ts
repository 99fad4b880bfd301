/**
 * The stack in front of real tools: synthesize a profile into a folder, point it at the
 * toolchain's provider mirror, and run terraform (or tofu) on it.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Testing } from 'cdktf';
import { StackConfig } from '../../config/schema';
import { WsAdmissionStack } from '../../constructs/stack';
import { InstalledToolchain } from '../../tools/cluster/toolchain';
import { config, EVERYTHING_CHANGED, Json } from '../support/synth';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';

export type { Json };

/** The config profiles of the stack tests, each judged by the real providers. */
export const PROFILES: ReadonlyArray<readonly [string, Partial<StackConfig>]> = [
  ['the defaults', {}],
  ['every option changed', EVERYTHING_CHANGED],
  ['an external Redis without TLS or AUTH', { externalRedisHost: 'redis.example.internal' }],
  ['no sample backend', { deploySampleBackend: false }],
  ['five Envoy replicas', { envoyReplicas: 5 }],
  ['the NLB idle timeout left alone', { nlbSetIdleTimeout: false, idleTimeoutSeconds: 300 }],
  ['metrics on an internal NLB', { idleTimeoutSeconds: 200, renewIntervalSeconds: 5, exposeMetricsOnNlb: true, nlbScheme: 'internal' }],
  ['remote state in S3', { remoteStateBucket: 'acme-tfstate' }],
  [
    'Redis on a volume (AOF), its passwords in the state',
    { redisPersistence: 'aof', redisStorageClass: 'gp3', redisPasswordInState: true },
  ],
  [
    'TLS at the NLB with defaults, the metrics port restricted',
    {
      nlbTls: true,
      nlbTlsCertificateArns: ['arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b'],
      metricsAllowedCidrs: ['10.0.0.0/16'],
    },
  ],
];

export interface Synthesized {
  readonly dir: string;
  readonly json: Json;
  /** Provider versions changed from the bindings' pin to the built one (see toolchain.json). */
  readonly repinned: readonly string[];
}

/**
 * Synthesizes the stack into `dir/cdk.tf.json` (local state in `dir`). Where the Go module
 * proxy could not serve a provider at the bindings' version, the required version is
 * changed to the one built (toolchain.json says which and why); nothing else is touched.
 */
export function synthInto(
  dir: string,
  t: InstalledToolchain,
  overrides: Partial<StackConfig>,
  luaDirs: readonly string[] = DEFAULT_LUA_DIRS,
): Synthesized {
  fs.mkdirSync(dir, { recursive: true });
  const stack = new WsAdmissionStack(Testing.app(), 'ws-envoy-admission', { config: config(overrides), luaDirs });
  const json = JSON.parse(Testing.synth(stack));
  const repinned: string[] = [];
  for (const p of t.providers) {
    const req = json.terraform.required_providers[p.name];
    if (!req) continue;
    if (req.version !== p.bindings)
      throw new Error(
        `required_providers.${p.name} is ${req.version}, toolchain.json says the bindings pin ${p.bindings}: update tools/cluster/toolchain.json`,
      );
    if (p.version !== p.bindings) {
      req.version = p.version;
      repinned.push(`${p.name} ${p.bindings} -> ${p.version}`);
    }
  }
  fs.writeFileSync(path.join(dir, 'cdk.tf.json'), JSON.stringify(json, null, 2));
  return { dir, json, repinned };
}

export interface TfResult {
  readonly status: number;
  readonly out: string;
}

/** One terraform/tofu command in `dir`, offline (providers from the mirror only), bounded in time. */
export function tf(
  t: InstalledToolchain,
  dir: string,
  args: readonly string[],
  timeoutMs = 10 * 60_000,
  env: NodeJS.ProcessEnv = {},
): TfResult {
  const r = spawnSync(t.cli.path, [...args, '-no-color'], {
    cwd: dir,
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGTERM',
    maxBuffer: 64 * 1024 * 1024,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? os.homedir(),
      CHECKPOINT_DISABLE: '1',
      TF_IN_AUTOMATION: '1',
      TF_INPUT: '0',
      TF_CLI_CONFIG_FILE: t.cliConfig,
      TF_PLUGIN_CACHE_DIR: pluginCache(t),
      ...env,
    },
  });
  return { status: r.status ?? 124, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error}` : ''}` };
}

/** The plugin cache beside the toolchain's CLI config: kept between runs, nothing left in /tmp. */
function pluginCache(t: InstalledToolchain): string {
  const dir = path.join(path.dirname(t.cliConfig), 'plugin-cache');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Throws with the command's output unless it succeeded. */
export function tfOk(t: InstalledToolchain, dir: string, args: readonly string[], timeoutMs?: number, env?: NodeJS.ProcessEnv): string {
  const r = tf(t, dir, args, timeoutMs, env);
  if (r.status !== 0) throw new Error(`${path.basename(t.cli.path)} ${args.join(' ')} failed (exit ${r.status}):\n${r.out}`);
  return r.out;
}

/** Like `tf`, without blocking the event loop (the fake load balancer controller runs meanwhile). */
export function tfAsync(
  t: InstalledToolchain,
  dir: string,
  args: readonly string[],
  timeoutMs = 10 * 60_000,
  env: NodeJS.ProcessEnv = {},
): Promise<TfResult> {
  return new Promise((resolve) => {
    const child = spawn(t.cli.path, [...args, '-no-color'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME ?? os.homedir(),
        CHECKPOINT_DISABLE: '1',
        TF_IN_AUTOMATION: '1',
        TF_INPUT: '0',
        TF_CLI_CONFIG_FILE: t.cliConfig,
        TF_PLUGIN_CACHE_DIR: pluginCache(t),
        ...env,
      },
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      out += `\n(killed after ${timeoutMs / 1000} s)`;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? 124, out });
    });
  });
}

export async function tfAsyncOk(
  t: InstalledToolchain,
  dir: string,
  args: readonly string[],
  timeoutMs?: number,
  env?: NodeJS.ProcessEnv,
): Promise<string> {
  const r = await tfAsync(t, dir, args, timeoutMs, env);
  if (r.status !== 0) throw new Error(`${path.basename(t.cli.path)} ${args.join(' ')} failed (exit ${r.status}):\n${r.out}`);
  return r.out;
}
