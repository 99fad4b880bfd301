import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';

/**
 * Typed calls of the Redis Functions library lua/redis/ws_admission.lua by its contract
 * (lua/redis/README.md), for the tests, the race workers and the benches. Plain FCALL,
 * so the wire traffic is what the proxies send.
 */
export const LIBRARY_FILE = path.resolve(__dirname, '..', '..', '..', 'lua', 'redis', 'ws_admission.lua');
export const LIBRARY_NAME = 'ws_admission';

export function readLibrary(): string {
  return fs.readFileSync(LIBRARY_FILE, 'utf8');
}

/** FUNCTION LOAD REPLACE, as an administrator does it. */
export async function loadLibrary(redis: Redis): Promise<void> {
  await redis.call('FUNCTION', 'LOAD', 'REPLACE', readLibrary());
}

export type AdmitStatus = 'ADMITTED' | 'RATE_LIMITED' | 'FULL' | 'NOHOSTS' | 'RECOVERING';
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
  /** Connection id `<proxy>|...`: its proxy is the caller. */
  readonly id: string;
  /** The caller proxy's healthy hosts; registered for its slot (ws_hosts) first when given. */
  readonly pods?: readonly string[];
  /** The client address for the connection inventory (admit's optional 9th argument). */
  readonly client?: string;
  /** Per-client caps (0 = off): open sockets, share of the slots (%), upgrades per window. */
  readonly clientMax?: number;
  readonly clientPercent?: number;
  readonly clientRate?: number;
}
export interface Snapshot {
  readonly nowMs: number;
  readonly windowUsed: number;
  readonly stats: Record<string, number>;
  readonly pods: Record<string, number>;
  readonly proxies: Record<string, number>;
  readonly gauges: Record<string, number>;
}
export type LeaseOp = readonly ['R' | 'X' | 'F', string, string];
export interface BeatReply {
  readonly epoch: string;
  readonly recoveringMs: number;
  readonly slotOk: boolean;
  /** The live proxies, when asked for. */
  readonly live: readonly string[];
  /** How many proxies' agents beat in the last 30 s. */
  readonly liveCount: number;
}

/** Key schema (README.md): every key of the deployment shares the hash tag. */
export function keysFor(tag: string) {
  const k = (s: string) => `{${tag}}:${s}`;
  return {
    rate: k('rate'),
    rateRequests: k('rate:requests'),
    stats: k('stats'),
    leases: k('leases'),
    load: k('load'),
    reach: k('reach'),
    down: k('down'),
    agents: k('agents'),
    beats: k('beats'),
    recovery: k('recovery'),
    inventory: k('inventory'),
    clients: k('clients'),
    crate: k('crate'),
    crateT: k('crate:t'),
  };
}

/** The member of `leases` for connection `id` on `pod`. */
export const lease = (id: string, pod: string) => `${id} ${pod}`;
/** The client key of a connection id (its fifth part, 16 hex digits), or undefined. */
export const clientOf = (id: string): string | undefined => /^[^|]*\|[^|]*\|[^|]*\|[^|]*\|([0-9a-f]{16})$/.exec(id)?.[1];

/** The proxy of a connection id. */
export const proxyOf = (id: string) => (id.includes('|') ? id.slice(0, id.indexOf('|')) : 'unknown');

function pairs(flat: unknown[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < flat.length; i += 2) out[String(flat[i])] = Number(flat[i + 1]);
  return out;
}

export class Functions {
  /** Loads the library and starts a state (an epoch, no recovery under way). */
  static async load(redis: Redis, tag = 't'): Promise<Functions> {
    await loadLibrary(redis);
    const f = new Functions(redis, tag);
    await f.start();
    return f;
  }

  readonly keys: ReturnType<typeof keysFor>;
  /** Slot and registered hosts of each proxy this instance registered. */
  private readonly registered = new Map<string, { slot: number; pods: Set<string> }>();

  constructor(
    readonly redis: Redis,
    readonly tag: string,
  ) {
    this.keys = keysFor(tag);
  }

  /** Raw FCALL with explicit KEYS and ARGV (for malformed-input tests). */
  fcall(name: string, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    return this.redis.call('FCALL', name, keys.length, ...keys, ...args.map(String));
  }

  /**
   * An epoch for an empty state, as the first agent makes it (begin + done), and the
   * recovery's minimum window (RECOVERY_MIN_MS) taken as passed: a state ready to admit.
   */
  async start(proxy = 'start'): Promise<string> {
    const [epoch] = await this.recoverBegin(proxy, 'feedfacefeedface');
    await this.recoverDone(proxy);
    await this.redis.hdel(this.keys.stats, 'recovering_until', 'recovering_min');
    return epoch;
  }

  /** Forgets which proxies this instance registered (after FLUSHALL). */
  forget(): void {
    this.registered.clear();
  }

  admitKeys(): string[] {
    const k = this.keys;
    return [k.rate, k.stats, k.leases, k.load, k.reach, k.down, k.agents, k.inventory, k.clients, k.crate, k.crateT];
  }

  /** One ws_admit call as it is. */
  async admitOnce(r: AdmitRequest): Promise<AdmitReply> {
    const args: (string | number)[] = [
      r.rateLimit,
      r.windowMs,
      r.maxPerPod,
      r.ttlMs,
      r.id,
      r.clientMax ?? 0,
      r.clientPercent ?? 0,
      r.clientRate ?? 0,
    ];
    if (r.client !== undefined) args.push(r.client);
    const [status, pod, activeOnPod, retryAfterMs, rateRemaining] = (await this.fcall('ws_admit', this.admitKeys(), args)) as [
      AdmitStatus,
      string,
      number,
      number,
      number,
    ];
    return { status, pod, activeOnPod, retryAfterMs, rateRemaining };
  }

  /** An admission by a proxy whose healthy hosts are `r.pods` (registered first when given). */
  async admit(r: AdmitRequest): Promise<AdmitReply> {
    if (r.pods) await this.reach(proxyOf(r.id), r.pods);
    return this.admitOnce(r);
  }

  hostsKeys(): string[] {
    const k = this.keys;
    return [k.agents, k.beats, k.reach, k.load, k.down];
  }

  async hosts(mode: 'claim' | 'add' | 'remove' | 'commit', proxy: string, slot?: number, pods: readonly string[] = []): Promise<unknown> {
    const args: (string | number)[] = [mode, proxy];
    if (slot !== undefined) args.push(slot, ...pods);
    return this.fcall('ws_hosts', this.hostsKeys(), args);
  }

  /**
   * Makes `pods` exactly the healthy hosts of `proxy` (as its agent does: a claimed slot,
   * then additions and removals, in batches of 1000).
   */
  async reach(proxy: string, pods: readonly string[]): Promise<number> {
    let reg = this.registered.get(proxy);
    if (!reg) {
      const slot = Number(await this.hosts('claim', proxy));
      reg = { slot, pods: new Set() };
      this.registered.set(proxy, reg);
      await this.change('add', proxy, reg.slot, pods);
      await this.hosts('commit', proxy, reg.slot);
    } else {
      const want = new Set(pods);
      await this.change(
        'add',
        proxy,
        reg.slot,
        pods.filter((p) => !reg!.pods.has(p)),
      );
      await this.change(
        'remove',
        proxy,
        reg.slot,
        [...reg.pods].filter((p) => !want.has(p)),
      );
    }
    reg.pods = new Set(pods);
    return reg.slot;
  }

  private async change(mode: 'add' | 'remove', proxy: string, slot: number, pods: readonly string[]): Promise<void> {
    for (let i = 0; i < pods.length; i += 1000) {
      const r = (await this.hosts(mode, proxy, slot, pods.slice(i, i + 1000))) as unknown[];
      if (r[0] !== 'OK') throw new Error(`ws_hosts ${mode} for ${proxy} slot ${slot}: ${String(r[0])}`);
    }
  }

  leasesKeys(): string[] {
    const k = this.keys;
    return [k.rate, k.leases, k.load, k.stats, k.reach, k.down, k.inventory, k.clients, k.crate, k.crateT];
  }

  /** ws_leases: {renewed, readded, released, failed}. */
  async leases(ttlMs: number, penaltyMs: number, ops: readonly LeaseOp[]): Promise<number[]> {
    return ((await this.fcall('ws_leases', this.leasesKeys(), [ttlMs, penaltyMs, ...ops.flat()])) as number[]).map(Number);
  }

  async release(id: string, pod: string): Promise<number> {
    return (await this.leases(1000, 0, [['X', id, pod]]))[2];
  }

  /** R: 1 when renewed, 2 when put back (lost or lapsed). */
  async renew(id: string, pod: string, ttlMs: number): Promise<number> {
    const [renewed, readded] = await this.leases(ttlMs, 0, [['R', id, pod]]);
    return renewed ? 1 : readded ? 2 : 0;
  }

  beatKeys(): string[] {
    const k = this.keys;
    return [k.stats, k.agents, k.beats, k.reach, k.load, k.down, k.recovery];
  }

  async beat(proxy: string, slot: number | '' = '', list = false): Promise<BeatReply> {
    const [epoch, recoveringMs, slotOk, live, liveCount] = (await this.fcall('ws_beat', this.beatKeys(), [proxy, slot, list ? 1 : 0])) as [
      string,
      number,
      number,
      string[],
      number,
    ];
    return { epoch, recoveringMs: Number(recoveringMs), slotOk: Number(slotOk) === 1, live, liveCount: Number(liveCount) };
  }

  async recoverBegin(proxy: string, epoch: string, known: readonly string[] = []): Promise<[string, number]> {
    const k = this.keys;
    const [e, left] = (await this.fcall('ws_recover', [k.stats, k.recovery], ['begin', proxy, epoch, ...known])) as [string, number];
    return [e, Number(left)];
  }

  async recoverDone(proxy: string): Promise<number> {
    const k = this.keys;
    return Number(await this.fcall('ws_recover', [k.stats, k.recovery], ['done', proxy]));
  }

  releaseProxyKeys(): string[] {
    const k = this.keys;
    return [k.leases, k.load, k.stats, k.reach, k.down, k.inventory, k.clients];
  }

  /** ws_release_proxy to the end of its scan. */
  async releaseProxy(proxy: string): Promise<{ removed: number; steps: number }> {
    let cursor = '0';
    let removed = 0;
    let steps = 0;
    do {
      const [next, n] = (await this.fcall('ws_release_proxy', this.releaseProxyKeys(), [proxy, cursor])) as [string, number];
      cursor = String(next);
      removed += Number(n);
      steps++;
    } while (cursor !== '0' && steps < 100000);
    return { removed, steps };
  }

  snapshotKeys(): string[] {
    const k = this.keys;
    return [k.rate, k.stats, k.leases, k.load, k.reach, k.down, k.agents, k.beats, k.inventory, k.clients];
  }

  async snapshot(windowMs: number): Promise<Snapshot> {
    const [nowMs, windowUsed, stats, perPod, perProxy, gauges] = (await this.fcall('ws_snapshot', this.snapshotKeys(), [windowMs])) as [
      number,
      number,
      unknown[],
      unknown[],
      unknown[],
      unknown[],
    ];
    return { nowMs, windowUsed, stats: pairs(stats), pods: pairs(perPod), proxies: pairs(perProxy), gauges: pairs(gauges) };
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
    byClient: Record<string, number>;
    clientFields: Record<string, number>;
  }> {
    const k = this.keys;
    const leases: Record<string, number> = {};
    const byProxy: Record<string, number> = {};
    for (const m of await this.redis.zrange(k.leases, 0, -1)) {
      const pod = m.slice(m.indexOf(' ') + 1);
      leases[pod] = (leases[pod] ?? 0) + 1;
      const proxy = proxyOf(m);
      byProxy[proxy] = (byProxy[proxy] ?? 0) + 1;
    }
    const load: Record<string, number> = {};
    const flat = await this.redis.zrange(k.load, 0, -1, 'WITHSCORES');
    for (let i = 0; i < flat.length; i += 2) if (Number(flat[i + 1]) !== 0) load[flat[i]] = Number(flat[i + 1]);
    const proxyFields: Record<string, number> = {};
    for (const [f, v] of Object.entries(await this.redis.hgetall(k.stats))) {
      if (f.startsWith('leases:')) proxyFields[f.slice(7)] = Number(v);
    }
    const byClient: Record<string, number> = {};
    for (const m of await this.redis.zrange(k.leases, 0, -1)) {
      const c = clientOf(m.slice(0, m.indexOf(' ')));
      if (c) byClient[c] = (byClient[c] ?? 0) + 1;
    }
    const clientFields = Object.fromEntries(Object.entries(await this.redis.hgetall(k.clients)).map(([c, v]) => [c, Number(v)]));
    return { leases, load, byProxy, proxyFields, byClient, clientFields };
  }

  /** Redis TIME in ms, the clock the functions use. */
  async nowMs(): Promise<number> {
    const [s, us] = await this.redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }
}
