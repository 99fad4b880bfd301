import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';

/**
 * Typed calls of the scripts in lua/redis/ by their contract (lua/redis/README.md),
 * for the tests and the race workers. Plain EVALSHA, no ioredis defineCommand, so
 * the wire traffic is what the Envoy filter sends.
 */
export const LUA_DIR = path.resolve(__dirname, '..', '..', '..', 'lua', 'redis');
export const SCRIPT_NAMES = [
  'admit',
  'register_view',
  'release',
  'renew',
  'reregister',
  'snapshot',
  'release_proxy',
  'conn_inventory',
] as const;
export type ScriptName = (typeof SCRIPT_NAMES)[number];

export function readScript(name: ScriptName): string {
  return fs.readFileSync(path.join(LUA_DIR, `${name}.lua`), 'utf8');
}

export type AdmitStatus = 'ADMITTED' | 'RATE_LIMITED' | 'FULL' | 'HOSTS' | 'EPOCH';
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
  /** The caller's healthy hosts: registered as a view (register_view.lua) when admit asks. */
  readonly pods: readonly string[];
  /** The state epoch the caller holds (admit's optional last argument). */
  readonly epoch?: string;
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
    leases: `{${tag}}:leases`,
    load: `{${tag}}:load`,
    views: `{${tag}}:views`,
    hosts: `{${tag}}:hosts`,
    conn: (id: string) => `{${tag}}:conn:${id}`,
  };
}

/** The member of `leases` for connection `id` on `pod`. */
export const lease = (id: string, pod: string) => `${id} ${pod}`;

/**
 * A view id for a host list: any 16 hex digits that depend only on the set will do for
 * the scripts (the filter uses keys.lua's own hash, tested in the filter tests).
 */
export function viewId(pods: readonly string[]): string {
  return crypto
    .createHash('sha1')
    .update([...pods].sort().join('\n'))
    .digest('hex')
    .slice(0, 16);
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

  constructor(
    readonly redis: Redis,
    readonly tag: string,
    readonly shas: Record<ScriptName, string>,
  ) {
    this.keys = keysFor(tag);
  }

  /** Raw EVALSHA with explicit KEYS and ARGV (for malformed-input tests). */
  raw(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    return this.redis.evalsha(this.shas[name], keys.length, ...keys, ...args.map(String));
  }

  /** One admit.lua call as it is: HOSTS when the view of `r.pods` is not registered. */
  async admitOnce(r: AdmitRequest): Promise<AdmitReply> {
    const k = this.keys;
    const args: (string | number)[] = [r.rateLimit, r.windowMs, r.maxPerPod, r.ttlMs, r.id, viewId(r.pods)];
    if (r.epoch !== undefined) args.push(r.epoch);
    const reply = (await this.raw('admit', [k.rate, k.stats, k.leases, k.load, k.views, k.hosts], args)) as [
      AdmitStatus,
      string,
      number,
      number,
      number,
    ];
    const [status, pod, activeOnPod, retryAfterMs, rateRemaining] = reply;
    return { status, pod, activeOnPod, retryAfterMs, rateRemaining };
  }

  /** An admission as the filter makes it: on HOSTS, register the view and ask again. */
  async admit(r: AdmitRequest): Promise<AdmitReply> {
    const first = await this.admitOnce(r);
    if (first.status !== 'HOSTS') return first;
    await this.registerView(r.pods);
    return this.admitOnce(r);
  }

  /** register_view.lua for `pods` (its id: viewId). Returns the number of pods. */
  async registerView(pods: readonly string[], id = viewId(pods)): Promise<number> {
    const k = this.keys;
    return Number(await this.raw('register_view', [k.views, k.hosts, k.load], [id, ...pods]));
  }

  async release(id: string, pod: string): Promise<number> {
    const k = this.keys;
    return Number(await this.raw('release', [k.leases, k.load, k.stats], [id, pod]));
  }

  async renew(id: string, pod: string, ttlMs: number): Promise<number> {
    return Number(await this.raw('renew', [this.keys.leases], [id, pod, ttlMs]));
  }

  async reregister(id: string, pod: string, ttlMs: number): Promise<number> {
    const k = this.keys;
    return Number(await this.raw('reregister', [k.leases, k.load, k.stats], [id, pod, ttlMs]));
  }

  /** release_proxy.lua to the end of its scan: leases of `proxy` (or only `ids`) removed. */
  async releaseProxy(proxy: string, ids: readonly string[] = []): Promise<{ removed: number; steps: number }> {
    const k = this.keys;
    let cursor = '0';
    let removed = 0;
    let steps = 0;
    do {
      const [next, n] = (await this.raw('release_proxy', [k.leases, k.load, k.stats], [proxy, cursor, ...ids])) as [string, number];
      cursor = String(next);
      removed += Number(n);
      steps++;
    } while (cursor !== '0' && steps < 100000);
    return { removed, steps };
  }

  /** The metrics path: snapshot.lua, one call. */
  async snapshot(windowMs: number): Promise<Snapshot> {
    const k = this.keys;
    const [nowMs, windowUsed, stats, perPod, perProxy] = (await this.raw('snapshot', [k.rate, k.stats, k.leases, k.load], [windowMs])) as [
      number,
      number,
      unknown[],
      unknown[],
      unknown[],
    ];
    return { nowMs, windowUsed, stats: pairs(stats), pods: pairs(perPod), proxies: pairs(perProxy) };
  }

  /**
   * Leases per pod and per proxy as `leases` holds them (expired ones included), `load`'s
   * counts (zeros left out) and the stats fields `leases:<proxy>`.
   */
  async counts(): Promise<{
    leases: Record<string, number>;
    load: Record<string, number>;
    byProxy: Record<string, number>;
    proxyFields: Record<string, number>;
  }> {
    const k = this.keys;
    const leases: Record<string, number> = {};
    const byProxy: Record<string, number> = {};
    for (const m of await this.redis.zrange(k.leases, 0, -1)) {
      const pod = m.slice(m.indexOf(' ') + 1);
      leases[pod] = (leases[pod] ?? 0) + 1;
      const proxy = m.includes('|') ? m.slice(0, m.indexOf('|')) : 'unknown';
      byProxy[proxy] = (byProxy[proxy] ?? 0) + 1;
    }
    const load: Record<string, number> = {};
    const flat = await this.redis.zrange(k.load, 0, -1, 'WITHSCORES');
    for (let i = 0; i < flat.length; i += 2) if (Number(flat[i + 1]) !== 0) load[flat[i]] = Number(flat[i + 1]);
    const proxyFields: Record<string, number> = {};
    for (const [f, v] of Object.entries(await this.redis.hgetall(k.stats))) {
      if (f.startsWith('leases:')) proxyFields[f.slice(7)] = Number(v);
    }
    return { leases, load, byProxy, proxyFields };
  }

  /** Redis TIME in ms, the clock the scripts use. */
  async nowMs(): Promise<number> {
    const [s, us] = await this.redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }
}
