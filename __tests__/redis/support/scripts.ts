import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';

/**
 * Typed calls of the scripts in lua/redis/ by their contract (lua/redis/README.md),
 * for the tests and the race workers. Plain EVALSHA, no ioredis defineCommand, so
 * the wire traffic is what the Envoy filter sends.
 */
export const LUA_DIR = path.resolve(__dirname, '..', '..', '..', 'lua', 'redis');
export const SCRIPT_NAMES = ['admit', 'release', 'renew', 'reregister', 'snapshot'] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

export function readScript(name: ScriptName): string {
  return fs.readFileSync(path.join(LUA_DIR, `${name}.lua`), 'utf8');
}

export type AdmitStatus = 'ADMITTED' | 'RATE_LIMITED' | 'FULL';
export interface AdmitReply {
  readonly status: AdmitStatus;
  readonly pod: string;
  readonly activeOnPod: number;
  readonly retryAfterMs: number;
  readonly rateRemaining: number;
}
export interface AdmitRequest {
  readonly rateLimit: number;
  readonly windowMs: number;
  readonly maxPerPod: number;
  readonly ttlMs: number;
  readonly id: string;
  readonly pods: readonly string[];
}
export interface Snapshot {
  readonly nowMs: number;
  readonly windowUsed: number;
  readonly stats: Record<string, number>;
  readonly pods: Record<string, number>;
  readonly proxies: Record<string, number>;
}

/** Key schema (README.md): every key of the deployment shares the hash tag. */
export function keysFor(tag: string) {
  return {
    rate: `{${tag}}:rate`,
    stats: `{${tag}}:stats`,
    pods: `{${tag}}:pods`,
    pod: (pod: string) => `{${tag}}:pod:${pod}`,
  };
}

function pairs(flat: unknown[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < flat.length; i += 2) out[String(flat[i])] = Number(flat[i + 1]);
  return out;
}

export class Scripts {
  static async load(redis: Redis, tag = 't'): Promise<Scripts> {
    const shas = {} as Record<ScriptName, string>;
    for (const name of SCRIPT_NAMES) shas[name] = String(await redis.script('LOAD', readScript(name)));
    return new Scripts(redis, tag, shas);
  }

  readonly keys: ReturnType<typeof keysFor>;

  constructor(readonly redis: Redis, readonly tag: string, readonly shas: Record<ScriptName, string>) {
    this.keys = keysFor(tag);
  }

  /** Raw EVALSHA with explicit KEYS and ARGV (for malformed-input tests). */
  raw(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    return this.redis.evalsha(this.shas[name], keys.length, ...keys, ...args.map(String));
  }

  async admit(r: AdmitRequest): Promise<AdmitReply> {
    const k = this.keys;
    const reply = (await this.raw('admit', [k.rate, k.stats, k.pods, ...r.pods.map(k.pod)],
      [r.rateLimit, r.windowMs, r.maxPerPod, r.ttlMs, r.id, ...r.pods])) as [AdmitStatus, string, number, number, number];
    const [status, pod, activeOnPod, retryAfterMs, rateRemaining] = reply;
    return { status, pod, activeOnPod, retryAfterMs, rateRemaining };
  }

  async release(id: string, pod: string): Promise<number> {
    const k = this.keys;
    return Number(await this.raw('release', [k.pod(pod), k.stats, k.pods], [id, pod]));
  }

  async renew(id: string, pod: string, ttlMs: number): Promise<number> {
    return Number(await this.raw('renew', [this.keys.pod(pod)], [id, ttlMs]));
  }

  async reregister(id: string, pod: string, ttlMs: number): Promise<number> {
    const k = this.keys;
    return Number(await this.raw('reregister', [k.pod(pod), k.stats, k.pods], [id, pod, ttlMs]));
  }

  /** The metrics path: SMEMBERS of the index, then snapshot.lua over those pods. */
  async snapshot(windowMs: number, podsOverride?: readonly string[]): Promise<Snapshot> {
    const k = this.keys;
    const pods = podsOverride ?? (await this.redis.smembers(k.pods)).sort();
    const [nowMs, windowUsed, stats, perPod, perProxy] = (await this.raw('snapshot',
      [k.rate, k.stats, k.pods, ...pods.map(k.pod)], [windowMs, ...pods])) as [number, number, unknown[], unknown[], unknown[]];
    return { nowMs, windowUsed, stats: pairs(stats), pods: pairs(perPod), proxies: pairs(perProxy) };
  }

  /** Redis TIME in ms, the clock the scripts use. */
  async nowMs(): Promise<number> {
    const [s, us] = await this.redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }
}
