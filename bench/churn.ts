/**
 * Backends that come and go (issue 18), part of `npm run bench` (`npm run bench -- churn`):
 * a rolling update of the backends seen by PROXIES proxies at different moments, against
 * real redis-servers with the stack's own redis.conf (constructs/redis.ts redisConf:
 * maxmemory 192mb, noeviction; the bench connects as its admin user), both designs in one
 * run, each through the same seeded schedule on a server of its own, one after the other
 * (side by side, before's 40 ms register_view calls would take the 2 cores from after's):
 *
 *   before  commit BEFORE_COMMIT's scripts as its filter used them (EVALSHA): each proxy
 *           publishes its healthy hosts at its readiness probe (every PROBE_MS) and, when
 *           they changed, registers the whole list as a view (register_view.lua); an
 *           admission is admit.lua with the proxy's view id (HOSTS: register, ask again);
 *           a failed upgrade and an end are release.lua;
 *   after   the Functions library as the agent and the filter use it (FCALL): each agent
 *           claims a slot, adds its pods and commits once (ws_hosts), then sends what
 *           changed within POLL_MS (add/remove); an admission is ws_admit; an upgrade
 *           pinned to a pod already gone (Envoy's own 503) is ws_leases F, an end X (the
 *           agent's batch of what it read); the agents beat (ws_beat) every BEAT_MS.
 *
 * The schedule: a fleet of N pods (10, quiet, then a few replacements; then 1,000 and
 * 10,000), one pod replaced every REPLACE_EVERY_MS (the oldest leaves, a new one with a
 * new address comes), each proxy seeing each change 0-SEEN_LATE_MS late (seeded random);
 * ADMITS_PER_S admissions per second spread over the proxies, each held HOLD_MS (uniform)
 * unless its pod leaves first (its connections drop: an end). Time is simulated and
 * compressed SPEEDUP times, but Redis TIME is real: the view TTL (10 min unused) and touch
 * interval (1 min) in the before scripts' text are divided by SPEEDUP (nothing else in
 * them is changed), and the penalty and rate window passed to the after functions too, so
 * a simulated minute is a minute for both designs (BENCH_CHURN_SPEEDUP=1 runs the scripts
 * as they were, in real time). The lag behind the schedule is reported: while it grows,
 * Redis time runs ahead of the schedule and before's views expire early (fewer views).
 *
 * Redis time per call: INFO commandstats (EVALSHA / FCALL usec) read after every call of
 * interest (one call at a time per server, so the difference is that call's own time;
 * ends and beats are sent as batches and read per batch: a mean). It is Redis's wall time
 * in the call, so it includes moments the machine's other work took the CPU: compare
 * within one run. Refusals: at each checkpoint one proxy's pods are all filled to the
 * limit (their counts in `load`, plain ZINCRBY), REFUSALS calls made, the fill undone (the
 * state around them is the rollout's). Bytes per call: the RESP request as sent. Memory: used_memory and MEMORY USAGE of every key at each
 * checkpoint (sampled) and at the end (exact), bytes per pod and per lease. OOM: error
 * replies. Outside Redis, per host change: the worker's parse of the host file and view id
 * before, the agent's /clusters parse and diff after (bench/churn_hosts.lua, LuaJIT).
 * Renewals, snapshots and probes of /metrics are left out of both (the fleet part).
 *
 * Run alone: `npx tsc && node bench/churn.js`. BENCH_CHURN_SPEEDUP (default 15),
 * BENCH_CHURN_MINUTES (simulated minutes of each rollout, default 11), BENCH_CHURN_SIZES
 * (default 1000,10000), BENCH_CHURN_SEED (default 18).
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Redis from 'ioredis';
import { readFunctionLibrary } from '../constructs/redis';
import { BACKEND_PENALTY_MS } from '../envoy/bootstrap';
import { RedisServer, startRedis } from '../tools/rig/redis-server';
import { Functions } from '../__tests__/redis/support/functions';
import { BEFORE_COMMIT, beforeFile, beforeKeys, beforeScript } from './before';
import { respBytes } from './measure';
import { runAlone } from './alone';

const PROXIES = 20;
const QUIET_PODS = 10;
const REPLACE_EVERY_MS = 2000;
const SEEN_LATE_MS = 10000;
const PROBE_MS = 5000; // before: the kubelet's readiness probe rewrites the host file
const POLL_MS = 1000; // after: the agent polls admin /clusters (lua/cli/agent.lua BEAT_MS)
const BEAT_MS = 1000;
const TICK_MS = 100;
const ADMITS_PER_S = 5;
const HOLD_MS = [5000, 60000] as const;
const MAX_PER_POD = 2;
const RATE_LIMIT = 1_000_000; // on, as in production, never binding
const RATE_WINDOW_MS = 60000;
const LEASE_TTL_MS = 3_600_000; // nothing expires: every lease ends by a release
const VIEW_TTL_MS = 600_000; // admit.lua and register_view.lua of BEFORE_COMMIT
const VIEW_TOUCH_MS = 60_000;
const QUIET_MS = 60_000;
const QUIET_CHANGES_MS = 30_000;
const REFUSALS = 20;
const HOSTS_BATCH = 1000; // lua/agent/host_registry.lua BATCH
const MAX_MEMORY = '192mb';
const TAG = 'ws';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 1) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : NaN);
const say = (line: string) => process.stdout.write(`churn: ${line}\n`);
const mb = (b: number) => round(b / 1048576, 1);

/** mulberry32: a small seeded generator, so both designs get the same schedule in every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// A redis-server with the stack's redis.conf and ACL, and the admin's connection to it.
// ---------------------------------------------------------------------------

class RedisProc {
  private constructor(
    private readonly server: RedisServer,
    readonly redis: Redis,
  ) {}

  static async start(): Promise<RedisProc> {
    const server = await startRedis({ acl: { hashTag: TAG }, maxMemory: MAX_MEMORY });
    const admin = server.users!.admin;
    const redis = new Redis({ host: server.host, port: server.port, username: admin.name, password: admin.password, lazyConnect: true });
    try {
      await redis.connect();
    } catch (e) {
      await server.stop();
      throw e;
    }
    return new RedisProc(server, redis);
  }

  async stop(): Promise<void> {
    this.redis.disconnect();
    await this.server.stop();
    fs.rmSync(this.server.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Redis time and bytes per call, by kind of call.
// ---------------------------------------------------------------------------

interface KindStats {
  calls: number;
  /** Redis usec of each call measured on its own. */
  usec: number[];
  /** Batches: their calls and usec, counted in the mean only. */
  batchCalls: number;
  batchUsec: number;
  bytes: number;
  bytesMax: number;
  /** Calls Redis refused before running them (OOM): no time of their own. */
  rejected: number;
  errors: Record<string, number>;
}

type Reply = unknown;
const isError = (r: Reply): r is Error => r instanceof Error;

class Meter {
  readonly kinds = new Map<string, KindStats>();
  phase = 'rollout';
  oomAtMs: number | undefined;
  /** Sim time of the call being made (for the first OOM). */
  now = 0;
  anomalies = 0;
  private last = { calls: 0, usec: 0 };

  constructor(
    private readonly redis: Redis,
    readonly command: 'evalsha' | 'fcall',
  ) {}

  private async read(): Promise<{ calls: number; usec: number }> {
    const m = new RegExp(`^cmdstat_${this.command}:calls=(\\d+),usec=(\\d+)`, 'm').exec(await this.redis.info('commandstats'));
    return m ? { calls: Number(m[1]), usec: Number(m[2]) } : { calls: 0, usec: 0 };
  }

  async start(): Promise<void> {
    this.last = await this.read();
  }

  private stats(kind: string): KindStats {
    const key = `${this.phase}:${kind}`;
    let k = this.kinds.get(key);
    if (!k) {
      k = { calls: 0, usec: [], batchCalls: 0, batchUsec: 0, bytes: 0, bytesMax: 0, rejected: 0, errors: {} };
      this.kinds.set(key, k);
    }
    return k;
  }

  private error(k: KindStats, e: Error): void {
    const msg = e.message.split(/[\s:]/)[0];
    k.errors[msg] = (k.errors[msg] ?? 0) + 1;
    if (msg === 'OOM' || e.message.includes('OOM')) this.oomAtMs ??= this.now;
  }

  /** One call, timed on its own; `kindOf` names it from the reply. */
  async call(cmd: (string | number)[], kindOf: (r: Reply) => string): Promise<Reply> {
    const [name, ...args] = cmd.map(String);
    const reply: Reply = await this.redis.call(name, ...args).catch((e: Error) => e);
    const now = await this.read();
    const k = this.stats(kindOf(reply));
    const dc = now.calls - this.last.calls;
    const du = now.usec - this.last.usec;
    this.last = now;
    k.calls++;
    const b = respBytes(cmd);
    k.bytes += b;
    k.bytesMax = Math.max(k.bytesMax, b);
    if (isError(reply)) this.error(k, reply);
    if (dc === 1) k.usec.push(du);
    else if (dc === 0) k.rejected++;
    else this.anomalies++;
    return reply;
  }

  /** Calls sent as one batch (pipelined); their Redis time is read once. */
  async batch(kind: string, cmds: (string | number)[][]): Promise<Reply[]> {
    if (cmds.length === 0) return [];
    const p = this.redis.pipeline();
    for (const c of cmds) p.call(String(c[0]), ...c.slice(1).map(String));
    const out = ((await p.exec()) ?? []).map(([e, r]) => (e ? e : r));
    const now = await this.read();
    const k = this.stats(kind);
    k.calls += cmds.length;
    k.batchCalls += now.calls - this.last.calls;
    k.batchUsec += now.usec - this.last.usec;
    k.rejected += cmds.length - (now.calls - this.last.calls);
    this.last = now;
    for (const c of cmds) {
      const b = respBytes(c);
      k.bytes += b;
      k.bytesMax = Math.max(k.bytesMax, b);
    }
    for (const r of out) if (isError(r)) this.error(k, r);
    return out;
  }
}

interface KindSummary {
  calls: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  totalMs: number;
  bytesPerCall: number;
  bytesMax: number;
  rejected: number;
  errors: Record<string, number>;
}

function summarize(k: KindStats): KindSummary {
  const s = [...k.usec].sort((a, b) => a - b);
  const q = (x: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(x * s.length) - 1)] : NaN);
  const timed = s.length + k.batchCalls;
  const total = s.reduce((a, b) => a + b, 0) + k.batchUsec;
  return {
    calls: k.calls,
    meanUs: round(total / timed),
    p50Us: q(0.5),
    p99Us: q(0.99),
    maxUs: s.length ? s[s.length - 1] : NaN,
    totalMs: round(total / 1000, 1),
    bytesPerCall: Math.round(k.bytes / k.calls),
    bytesMax: k.bytesMax,
    rejected: k.rejected,
    errors: k.errors,
  };
}

// ---------------------------------------------------------------------------
// The schedule: the fleet, what each proxy sees, the admissions.
// ---------------------------------------------------------------------------

interface Admission {
  readonly p: number;
  readonly id: string;
  readonly holdMs: number;
}
interface Lease {
  readonly id: string;
  readonly pod: string;
  readonly p: number;
  readonly endAt: number;
}

class Schedule {
  readonly rand: () => number;
  readonly proxies: string[];
  readonly truth = new Set<string>();
  /** The fleet by age: the oldest is replaced first. */
  readonly order: string[] = [];
  /** What each proxy's Envoy lists as healthy now. */
  readonly seen: Set<string>[];
  /** Per proxy: changes of `seen` in order (each design takes them at its own pace). */
  readonly changes: Array<Array<{ op: 'add' | 'remove'; pod: string }>>;
  readonly probeAt: number[];
  readonly pollAt: number[];
  private readonly due = new Map<number, Array<{ p: number; op: 'add' | 'remove'; pod: string }>>();
  private readonly used = new Set<string>();
  private admitted = 0;
  private owed = 0;

  constructor(seed: number, pods: number) {
    this.rand = seeded(seed);
    const name = () =>
      Math.floor(this.rand() * 36 ** 5)
        .toString(36)
        .padStart(5, '0');
    this.proxies = Array.from({ length: PROXIES }, () => `ws-envoy-6f7c9d8b5d-${name()}`);
    for (let i = 0; i < pods; i++) {
      const pod = this.newPod();
      this.truth.add(pod);
      this.order.push(pod);
    }
    this.seen = this.proxies.map(() => new Set(this.order));
    this.changes = this.proxies.map(() => []);
    const phase = (every: number) => Math.floor((this.rand() * every) / TICK_MS) * TICK_MS;
    this.probeAt = this.proxies.map(() => phase(PROBE_MS));
    this.pollAt = this.proxies.map(() => phase(POLL_MS));
  }

  private newPod(): string {
    for (;;) {
      const ip = [10, 1 + Math.floor(this.rand() * 254), Math.floor(this.rand() * 256), 1 + Math.floor(this.rand() * 254)].join('.');
      const pod = `${ip}:8080`;
      if (!this.used.has(pod)) {
        this.used.add(pod);
        return pod;
      }
    }
  }

  /** The oldest pod leaves, a new one comes; each proxy sees each 0-SEEN_LATE_MS later. */
  replace(t: number): string {
    const gone = this.order.shift()!;
    const pod = this.newPod();
    this.order.push(pod);
    this.truth.delete(gone);
    this.truth.add(pod);
    const at = (d: number) => Math.ceil((t + d) / TICK_MS) * TICK_MS;
    for (let p = 0; p < PROXIES; p++) {
      for (const [op, which] of [
        ['remove', gone],
        ['add', pod],
      ] as const) {
        const when = at(this.rand() * SEEN_LATE_MS);
        const list = this.due.get(when) ?? [];
        list.push({ p, op, pod: which });
        this.due.set(when, list);
      }
    }
    return gone;
  }

  /** The changes each proxy sees at `t`. */
  see(t: number): void {
    for (const e of this.due.get(t) ?? []) {
      if (e.op === 'add') this.seen[e.p].add(e.pod);
      else this.seen[e.p].delete(e.pod);
      this.changes[e.p].push({ op: e.op, pod: e.pod });
    }
    this.due.delete(t);
  }

  /** This tick's admissions (the same for both designs). */
  admissions(): Admission[] {
    const out: Admission[] = [];
    this.owed += (ADMITS_PER_S * TICK_MS) / 1000;
    for (; this.owed >= 1; this.owed--) {
      const p = Math.floor(this.rand() * PROXIES);
      const worker = Math.floor(this.rand() * 2) ? 'a1b2c3' : '0f9e8d';
      const random = Math.floor(this.rand() * 0xffffff)
        .toString(16)
        .padStart(6, '0');
      const holdMs = HOLD_MS[0] + this.rand() * (HOLD_MS[1] - HOLD_MS[0]);
      out.push({ p, id: `${this.proxies[p]}|${worker}|${++this.admitted}|${random}`, holdMs });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// The two designs.
// ---------------------------------------------------------------------------

interface Outcomes {
  attempts: number;
  admitted: number;
  /** Admitted onto a pod that had already left: Envoy answers 503 itself. */
  failedUpstream: number;
  refused: number;
  noHosts: number;
  /** No decision: Redis answered an error (the filter fails open or closed). */
  decisionErrors: number;
}

interface Memory {
  usedMemory: number;
  keys: Record<string, { bytes: number; count: number }>;
}

abstract class Design {
  abstract readonly name: 'before' | 'after';
  readonly leases = new Map<string, Lease>();
  readonly byPod = new Map<string, Set<string>>();
  readonly outcomes: Outcomes = { attempts: 0, admitted: 0, failedUpstream: 0, refused: 0, noHosts: 0, decisionErrors: 0 };
  /** Proxy-level host list changes sent to Redis, and in the quiet phase apart. */
  hostChanges: Record<string, number> = {};
  /** Which kinds of call are a host list change's (for the per-change figures). */
  abstract readonly hostKinds: readonly string[];
  emptyUsedMemory = 0;
  readonly series: Array<{ simMinute: number; usedMemory: number; keys: Record<string, number> }> = [];
  readonly probes: Array<{ simMinute: number; ok: boolean; note?: string }> = [];

  constructor(
    readonly server: RedisProc,
    readonly meter: Meter,
    readonly s: Schedule,
  ) {}

  get redis(): Redis {
    return this.server.redis;
  }

  abstract init(): Promise<void>;
  /** Proxy p's healthy hosts to Redis, as this design does it at `t`. */
  abstract publish(p: number, t: number): Promise<void>;
  abstract decide(a: Admission, t: number): Promise<string | undefined>;
  abstract failed(l: Lease): Promise<void>;
  abstract release(ls: Lease[]): Promise<void>;
  abstract beat(ps: number[]): Promise<void>;
  /** Proxy p's pods as Redis holds them for it (the probe fills them). */
  abstract podsOf(p: number): string[] | undefined;
  abstract refusal(p: number, i: number): Promise<Reply>;
  /** name -> [key, type] of every key of the design. */
  abstract keys(): Record<string, [string, 'zset' | 'hash']>;
  /** The keys that hold something per pod (not per lease, per proxy or per window). */
  abstract readonly podKeys: readonly string[];

  /** Proxy p's Envoy lists another set of hosts now. */
  seenChanged(_p: number): void {
    /* the after design's agent diffs the lists itself */
  }

  protected changed(): void {
    this.hostChanges[this.meter.phase] = (this.hostChanges[this.meter.phase] ?? 0) + 1;
  }

  async admit(a: Admission, t: number): Promise<void> {
    this.outcomes.attempts++;
    const pod = await this.decide(a, t);
    if (pod === undefined) return;
    this.outcomes.admitted++;
    const l = { id: a.id, pod, p: a.p, endAt: t + a.holdMs };
    if (!this.s.truth.has(pod)) {
      this.outcomes.failedUpstream++;
      await this.failed(l);
      return;
    }
    this.leases.set(l.id, l);
    const set = this.byPod.get(pod) ?? new Set<string>();
    set.add(l.id);
    this.byPod.set(pod, set);
  }

  /** Leases that end at `t`: held long enough, or on a pod that left (its connections dropped). */
  ending(t: number, goneNow: string | undefined): Lease[] {
    const out: Lease[] = [];
    for (const l of this.leases.values()) if (l.endAt <= t || l.pod === goneNow) out.push(l);
    for (const l of out) {
      this.leases.delete(l.id);
      this.byPod.get(l.pod)?.delete(l.id);
    }
    return out;
  }

  async memory(exact: boolean): Promise<Memory> {
    const usedMemory = Number(/used_memory:(\d+)/.exec(await this.redis.info('memory'))![1]);
    const keys: Memory['keys'] = {};
    for (const [name, [key, type]] of Object.entries(this.keys())) {
      const bytes = Number((exact ? await this.redis.memory('USAGE', key, 'SAMPLES', '0') : await this.redis.memory('USAGE', key)) ?? 0);
      const count = type === 'zset' ? await this.redis.zcard(key) : await this.redis.hlen(key);
      keys[name] = { bytes, count };
    }
    return { usedMemory, keys };
  }

  /**
   * Every pod proxy p's calls may pick filled to the limit with plain commands, REFUSALS
   * decisions that must all be FULL, the fill undone.
   */
  async probe(p: number, t: number): Promise<void> {
    const simMinute = round(t / 60000, 2);
    const pods = this.podsOf(p);
    if (!pods || pods.length === 0) {
      this.probes.push({ simMinute, ok: false, note: 'the proxy has no hosts in Redis (before: its view could not be registered)' });
      return;
    }
    // Only the counts in `load` are raised to the limit: a decision reads no lease member
    // (none of them expires here), and the rollout's leases set stays as it is.
    const load = this.keys().load[0];
    const counts = await this.redis.pipeline(pods.map((pod) => ['zscore', load, pod])).exec();
    const fill: Array<[string, number]> = [];
    const writes = this.redis.pipeline();
    pods.forEach((pod, i) => {
      const add = MAX_PER_POD - Number(counts?.[i]?.[1] ?? 0);
      if (add <= 0) return;
      fill.push([pod, add]);
      writes.zincrby(load, add, pod);
    });
    const wrote = (await writes.exec()) ?? [];
    const undo = async () => {
      const u = this.redis.pipeline();
      fill.forEach(([pod, add], i) => {
        if (!wrote[i]?.[0]) u.zincrby(load, -add, pod);
      });
      await u.exec();
    };
    const failedWrite = wrote.find(([e]) => e);
    if (failedWrite) {
      await undo();
      this.probes.push({ simMinute, ok: false, note: `could not fill: ${String(failedWrite[0]?.message)}` });
      return;
    }
    let wrong = '';
    for (let i = 0; i < REFUSALS; i++) {
      const r = await this.refusal(p, i);
      const status = isError(r) ? r.message : String((r as unknown[])[0]);
      if (status !== 'FULL') wrong ||= status;
    }
    await undo();
    this.probes.push({ simMinute, ok: wrong === '', ...(wrong ? { note: `a refusal answered ${wrong}` } : {}) });
  }
}

/** The view id of a set of pods: any 16 hex digits that depend only on the set (order-free: a sum of per-pod hashes). */
const podHash = new Map<string, bigint>();
function viewId(pods: Iterable<string>): string {
  let sum = 0n;
  for (const p of pods) {
    let h = podHash.get(p);
    if (h === undefined) {
      h = BigInt(`0x${crypto.createHash('sha1').update(p).digest('hex').slice(0, 16)}`);
      podHash.set(p, h);
    }
    sum = (sum + h) & 0xffffffffffffffffn;
  }
  return sum.toString(16).padStart(16, '0');
}

class Before extends Design {
  readonly name = 'before';
  readonly hostKinds = ['register_view', 'register_view:error', 'admit:HOSTS'];
  readonly podKeys = ['load', 'views', 'hosts'];
  private readonly k = beforeKeys(TAG);
  private sha = { admit: '', registerView: '', release: '' };
  /** Each proxy's published list: its view. */
  private readonly view: Array<{ id: string; list: string[]; version: number }> = [];
  private readonly version: number[] = Array.from({ length: PROXIES }, () => 0);
  /** View id -> sim time it was last registered or touched (what the bench believes live). */
  private readonly live = new Map<string, number>();
  private readonly registered = new Set<string>();

  constructor(
    server: RedisProc,
    s: Schedule,
    private readonly speedup: number,
  ) {
    super(server, new Meter(server.redis, 'evalsha'), s);
  }

  keys(): Record<string, [string, 'zset' | 'hash']> {
    const k = this.k;
    return {
      rate: [k.rate, 'zset'],
      stats: [k.stats, 'hash'],
      leases: [k.leases, 'zset'],
      load: [k.load, 'zset'],
      views: [k.views, 'zset'],
      hosts: [k.hosts, 'zset'],
    };
  }

  /** The scripts of BEFORE_COMMIT, the view TTL and touch interval divided by the speedup. */
  private script(name: 'admit' | 'register_view' | 'release'): string {
    const text = beforeScript(name);
    if (!text) throw new Error(`churn: git show ${BEFORE_COMMIT}:lua/redis/${name}.lua failed (the before design needs the git history)`);
    const scaled = (ms: number) => String(Math.round(ms / this.speedup));
    const edits: Record<string, [string, string]> = {
      admit: [
        'local VIEW_TTL_MS, VIEW_TOUCH_MS = 600000, 60000',
        `local VIEW_TTL_MS, VIEW_TOUCH_MS = ${scaled(VIEW_TTL_MS)}, ${scaled(VIEW_TOUCH_MS)}`,
      ],
      register_view: ['local VIEW_TTL_MS = 600000', `local VIEW_TTL_MS = ${scaled(VIEW_TTL_MS)}`],
    };
    const e = edits[name];
    if (!e) return text;
    if (!text.includes(e[0])) throw new Error(`churn: ${BEFORE_COMMIT}:lua/redis/${name}.lua has no '${e[0]}' to scale`);
    return text.replace(e[0], e[1]);
  }

  async init(): Promise<void> {
    this.sha.admit = String(await this.redis.script('LOAD', this.script('admit')));
    this.sha.registerView = String(await this.redis.script('LOAD', this.script('register_view')));
    this.sha.release = String(await this.redis.script('LOAD', this.script('release')));
    await this.redis.hset(this.k.stats, 'epoch:id', 'e1'); // the filter's state epoch (no script)
    this.emptyUsedMemory = (await this.memory(false)).usedMemory;
    await this.meter.start();
    // Every proxy starts with the whole fleet: one view for all.
    const list = [...this.s.order];
    const id = viewId(list);
    for (let p = 0; p < PROXIES; p++) this.view.push({ id, list, version: 0 });
    await this.register(id, list, 'register_view:initial', 0);
  }

  private async register(id: string, list: string[], kind: string, t: number): Promise<boolean> {
    const k = this.k;
    const r = await this.meter.call(['EVALSHA', this.sha.registerView, 3, k.views, k.hosts, k.load, id, ...list], (x) =>
      isError(x) ? `${kind}:error` : kind,
    );
    if (isError(r)) return false;
    this.live.set(id, t);
    this.registered.add(id);
    return true;
  }

  override seenChanged(p: number): void {
    this.version[p]++;
  }

  async publish(p: number, t: number): Promise<void> {
    if (this.view[p].version === this.version[p]) return;
    const list = [...this.s.seen[p]];
    const id = viewId(list);
    this.view[p] = { id, list, version: this.version[p] };
    this.changed();
    // The filter registers a view on admit.lua's HOSTS answer; every worker and proxy with
    // the same set shares it, so a view still live is not sent again.
    const seen = this.live.get(id);
    if (seen !== undefined && t - seen < VIEW_TTL_MS) return;
    await this.register(id, list, 'register_view', t);
  }

  private admitCall(id: string, view: string): (string | number)[] {
    const k = this.k;
    return [
      'EVALSHA',
      this.sha.admit,
      6,
      k.rate,
      k.stats,
      k.leases,
      k.load,
      k.views,
      k.hosts,
      RATE_LIMIT,
      Math.round(RATE_WINDOW_MS / this.speedup),
      MAX_PER_POD,
      LEASE_TTL_MS,
      id,
      view,
      'e1',
    ];
  }

  async decide(a: Admission, t: number): Promise<string | undefined> {
    const v = this.view[a.p];
    const kindOf = (r: Reply) => `admit:${isError(r) ? 'error' : String((r as unknown[])[0])}`;
    let r = await this.meter.call(this.admitCall(a.id, v.id), kindOf);
    if (!isError(r) && (r as unknown[])[0] === 'HOSTS') {
      this.live.delete(v.id);
      if (!(await this.register(v.id, v.list, 'register_view', t))) {
        this.outcomes.decisionErrors++;
        return undefined;
      }
      r = await this.meter.call(this.admitCall(a.id, v.id), kindOf);
    }
    if (isError(r)) {
      this.outcomes.decisionErrors++;
      return undefined;
    }
    const [status, pod] = r as [string, string];
    if (status === 'ADMITTED') {
      if (t - (this.live.get(v.id) ?? t) >= VIEW_TOUCH_MS) this.live.set(v.id, t);
      return pod;
    }
    if (status === 'FULL') this.outcomes.refused++;
    else this.outcomes.decisionErrors++;
    return undefined;
  }

  private releaseCall(l: Lease): (string | number)[] {
    const k = this.k;
    return ['EVALSHA', this.sha.release, 3, k.leases, k.load, k.stats, l.id, l.pod];
  }

  async failed(l: Lease): Promise<void> {
    // The filter's envoy_on_response: a non-101 answer gives the lease back at once.
    await this.meter.call(this.releaseCall(l), () => 'release:failed');
  }

  async release(ls: Lease[]): Promise<void> {
    // The filter on a Close frame, or the lease-log sidecar: release.lua per stream.
    await this.meter.batch(
      'release',
      ls.map((l) => this.releaseCall(l)),
    );
  }

  async beat(): Promise<void> {
    /* no agent before */
  }

  podsOf(p: number): string[] | undefined {
    return this.registered.has(this.view[p].id) ? this.view[p].list : undefined;
  }

  async refusal(p: number, i: number): Promise<Reply> {
    return this.meter.call(this.admitCall(`${this.s.proxies[p]}|probe0|${i}|000000`, this.view[p].id), (r) =>
      isError(r) || (r as unknown[])[0] !== 'FULL' ? 'refusal:other' : 'refusal',
    );
  }
}

class After extends Design {
  readonly name = 'after';
  readonly hostKinds = ['hosts:add', 'hosts:remove', 'hosts:add:error', 'hosts:remove:error'];
  readonly podKeys = ['load', 'reach', 'down'];
  private readonly f: Functions;
  private readonly slot: number[] = [];
  private readonly reported: Set<string>[] = [];
  private readonly taken: number[] = Array.from({ length: PROXIES }, () => 0);

  constructor(
    server: RedisProc,
    s: Schedule,
    private readonly speedup: number,
  ) {
    super(server, new Meter(server.redis, 'fcall'), s);
    this.f = new Functions(server.redis, TAG);
  }

  keys(): Record<string, [string, 'zset' | 'hash']> {
    const k = this.f.keys;
    return {
      rate: [k.rate, 'zset'],
      stats: [k.stats, 'hash'],
      leases: [k.leases, 'zset'],
      load: [k.load, 'zset'],
      reach: [k.reach, 'hash'],
      down: [k.down, 'zset'],
      agents: [k.agents, 'hash'],
      beats: [k.beats, 'zset'],
    };
  }

  private hostsCall(mode: string, p: number, pods: readonly string[] = []): (string | number)[] {
    const keys = this.f.hostsKeys();
    return ['FCALL', 'ws_hosts', keys.length, ...keys, mode, this.s.proxies[p], ...(mode === 'claim' ? [] : [this.slot[p], ...pods])];
  }

  async init(): Promise<void> {
    // What the administrator does (constructs/redis.ts), then the first agent's epoch.
    await this.redis.call('FUNCTION', 'LOAD', 'REPLACE', readFunctionLibrary());
    await this.f.start();
    this.emptyUsedMemory = (await this.memory(false)).usedMemory;
    await this.meter.start();
    // Each agent: a slot, every pod, then the slot is the proxy's (lua/agent/host_registry.lua).
    const all = [...this.s.order];
    for (let p = 0; p < PROXIES; p++) {
      this.slot[p] = Number(await this.meter.call(this.hostsCall('claim', p), () => 'hosts:initial'));
      for (let i = 0; i < all.length; i += HOSTS_BATCH)
        await this.meter.call(this.hostsCall('add', p, all.slice(i, i + HOSTS_BATCH)), () => 'hosts:initial');
      const r = await this.meter.call(this.hostsCall('commit', p), () => 'hosts:initial');
      if (isError(r) || (r as unknown[])[0] !== 'OK') throw new Error(`churn: ws_hosts commit for ${this.s.proxies[p]}: ${String(r)}`);
      this.reported.push(new Set(all));
    }
  }

  async publish(p: number): Promise<void> {
    // The agent's poll: the difference between Envoy's list now and what Redis holds.
    const changes = this.s.changes[p];
    if (this.taken[p] === changes.length) return;
    const want = this.s.seen[p];
    const adds = new Set<string>();
    const removes = new Set<string>();
    for (const c of changes.slice(this.taken[p])) (c.op === 'add' ? adds : removes).add(c.pod);
    this.taken[p] = changes.length;
    const add = [...adds].filter((pod) => want.has(pod) && !this.reported[p].has(pod));
    const remove = [...removes].filter((pod) => !want.has(pod) && this.reported[p].has(pod));
    if (add.length + remove.length === 0) return;
    this.changed();
    for (const [mode, pods] of [
      ['add', add],
      ['remove', remove],
    ] as const) {
      for (let i = 0; i < pods.length; i += HOSTS_BATCH) {
        const r = await this.meter.call(this.hostsCall(mode, p, pods.slice(i, i + HOSTS_BATCH)), (x) =>
          isError(x) ? `hosts:${mode}:error` : `hosts:${mode}`,
        );
        if (isError(r) || (r as unknown[])[0] !== 'OK') return; // counted as an error; tried again at the next change
      }
      for (const pod of pods) {
        if (mode === 'add') this.reported[p].add(pod);
        else this.reported[p].delete(pod);
      }
    }
  }

  private admitCall(id: string): (string | number)[] {
    const keys = this.f.admitKeys();
    return [
      'FCALL',
      'ws_admit',
      keys.length,
      ...keys,
      RATE_LIMIT,
      Math.round(RATE_WINDOW_MS / this.speedup),
      MAX_PER_POD,
      LEASE_TTL_MS,
      id,
      // The per-client limits off (the ids carry no client key): what a rollout costs.
      0,
      0,
      0,
    ];
  }

  async decide(a: Admission): Promise<string | undefined> {
    const r = await this.meter.call(this.admitCall(a.id), (x) => `admit:${isError(x) ? 'error' : String((x as unknown[])[0])}`);
    if (isError(r)) {
      this.outcomes.decisionErrors++;
      return undefined;
    }
    const [status, pod] = r as [string, string];
    if (status === 'ADMITTED') return pod;
    if (status === 'FULL') this.outcomes.refused++;
    else if (status === 'NOHOSTS') this.outcomes.noHosts++;
    else this.outcomes.decisionErrors++;
    return undefined;
  }

  private leasesCall(ops: Array<['X' | 'F', string, string]>): (string | number)[] {
    const keys = this.f.leasesKeys();
    return ['FCALL', 'ws_leases', keys.length, ...keys, LEASE_TTL_MS, Math.round(BACKEND_PENALTY_MS / this.speedup), ...ops.flat()];
  }

  async failed(l: Lease): Promise<void> {
    // The filter's envoy_on_response: Envoy answered itself (no upstream service time).
    await this.meter.call(this.leasesCall([['F', l.id, l.pod]]), () => 'leases:F');
  }

  async release(ls: Lease[]): Promise<void> {
    // Each agent sends the ends it read from its proxy's lease log in one call.
    const byProxy = new Map<number, Array<['X', string, string]>>();
    for (const l of ls) byProxy.set(l.p, [...(byProxy.get(l.p) ?? []), ['X', l.id, l.pod]]);
    await this.meter.batch(
      'leases:X',
      [...byProxy.values()].map((ops) => this.leasesCall(ops)),
    );
  }

  async beat(ps: number[]): Promise<void> {
    const keys = this.f.beatKeys();
    await this.meter.batch(
      'beat',
      ps.map((p) => ['FCALL', 'ws_beat', keys.length, ...keys, this.s.proxies[p], this.slot[p], 0]),
    );
  }

  podsOf(p: number): string[] {
    return [...this.reported[p]];
  }

  async refusal(p: number, i: number): Promise<Reply> {
    return this.meter.call(this.admitCall(`${this.s.proxies[p]}|probe0|${i}|000000`), (r) =>
      isError(r) || (r as unknown[])[0] !== 'FULL' ? 'refusal:other' : 'refusal',
    );
  }
}

// ---------------------------------------------------------------------------
// Outside Redis: the worker's (before) and the agent's (after) work per host change.
// ---------------------------------------------------------------------------

interface HostWork {
  pods: number;
  beforeWorkerParseMs: number;
  beforeWorkerViewIdMs: number;
  beforeWorkerMs: number;
  hostFileBytes: number;
  afterWorkerMs: number;
  afterAgentParseClustersMs: number;
  afterAgentSyncMs: number;
  clustersBytes: number;
}

function hostWork(sizes: number[]): HostWork[] | string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-churn-lua-'));
  try {
    for (const f of ['hosts', 'keys']) {
      const text = beforeFile(`lua/envoy/${f}.lua`);
      if (!text) return `not measured: git show ${BEFORE_COMMIT}:lua/envoy/${f}.lua failed`;
      fs.writeFileSync(path.join(dir, `${f}.lua`), text);
    }
    const r = spawnSync(
      'luajit',
      [path.join(__dirname, 'churn_hosts.lua'), dir, path.resolve(__dirname, '..', 'lua'), sizes.join(','), '9'],
      {
        encoding: 'utf8',
        timeout: 120_000,
      },
    );
    if (r.status !== 0) return `not measured: luajit churn_hosts.lua failed: ${r.stderr || String(r.error)}`;
    return r.stdout
      .trim()
      .split('\n')
      .map((line) => {
        const [pods, parse, view, cparse, sync, fileBytes, clustersBytes] = line.split(' ').map(Number);
        return {
          pods,
          beforeWorkerParseMs: round(parse, 3),
          beforeWorkerViewIdMs: round(view, 3),
          beforeWorkerMs: round(parse + view, 3),
          hostFileBytes: fileBytes,
          afterWorkerMs: 0,
          afterAgentParseClustersMs: round(cparse, 3),
          afterAgentSyncMs: round(sync, 3),
          clustersBytes,
        };
      });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// One fleet size: both designs through the same schedule.
// ---------------------------------------------------------------------------

interface Options {
  readonly speedup: number;
  readonly rolloutMs: number;
  readonly seed: number;
}

interface DesignResult {
  design: 'before' | 'after';
  calls: Record<string, Record<string, KindSummary>>;
  outcomes: Outcomes & { failedUpstreamRate: number };
  hostChanges: Record<string, { changes: number; redisCallsPerChange: number; redisUsPerChange: number; bytesPerChange: number }>;
  redisMsPerSimSecond: Record<string, number>;
  memory: {
    emptyUsedMemory: number;
    usedMemory: number;
    usedMemoryPeak: number;
    stateBytes: number;
    keys: Memory['keys'];
    podsInFleet: number;
    bytesPerPod: number;
    bytesPerLease: number;
    series: Design['series'];
  };
  oom: { hit: boolean; firstAtSimMinute: number | null; errorstats: string };
  probes: Design['probes'];
  commandstats: string;
  measurementAnomalies: number;
}

interface DesignRun extends DesignResult {
  simMinutes: number;
  replacements: number;
  maxLagMs: number;
  wallSeconds: number;
  stoppedEarly?: string;
}

/** One design through the schedule of `pods` (seeded: the same for both designs), on its own server. */
async function runDesign(which: 'before' | 'after', pods: number, quiet: boolean, o: Options): Promise<DesignRun> {
  const s = new Schedule(o.seed + pods, pods);
  const wall0 = Date.now();
  const server = await RedisProc.start();
  try {
    const d: Design = which === 'before' ? new Before(server, s, o.speedup) : new After(server, s, o.speedup);
    await d.init();
    const rolloutFrom = quiet ? QUIET_MS : 0;
    const endMs = quiet ? QUIET_MS + QUIET_CHANGES_MS : o.rolloutMs;
    const checkpoints = new Set(
      quiet ? [20_000, 40_000, 60_000] : [20_000, ...Array.from({ length: Math.floor(endMs / 60_000) }, (_, i) => (i + 1) * 60_000)],
    );
    d.meter.phase = quiet ? 'quiet' : 'rollout';
    const start = Date.now();
    const capMs = (endMs / o.speedup) * 3 + 120_000;
    let replacements = 0;
    let maxLag = 0;
    let stoppedEarly: string | undefined;
    let simT = 0;
    for (let t = TICK_MS; t <= endMs; t += TICK_MS) {
      simT = t;
      d.meter.now = t;
      if (quiet && t === rolloutFrom + TICK_MS) d.meter.phase = 'rollout';
      let gone: string | undefined;
      if (t > rolloutFrom && (t - rolloutFrom) % REPLACE_EVERY_MS === 0) {
        gone = s.replace(t);
        replacements++;
      }
      const seen0 = s.changes.map((c) => c.length);
      s.see(t);
      s.changes.forEach((c, p) => {
        if (c.length !== seen0[p]) d.seenChanged(p);
      });
      const admissions = s.admissions();
      const ends = d.ending(t, gone);
      if (ends.length) await d.release(ends);
      for (let p = 0; p < PROXIES; p++) {
        const [every, at] = which === 'before' ? [PROBE_MS, s.probeAt[p]] : [POLL_MS, s.pollAt[p]];
        if ((t - at) % every === 0) await d.publish(p, t);
      }
      const beats = s.proxies.map((_, p) => p).filter((p) => (t - s.pollAt[p]) % BEAT_MS === 0);
      if (beats.length) await d.beat(beats);
      for (const a of admissions) await d.admit(a, t);
      if (checkpoints.has(t)) {
        const simMinute = round(t / 60000, 2);
        const m = await d.memory(false);
        d.series.push({
          simMinute,
          usedMemory: m.usedMemory,
          keys: Object.fromEntries(Object.entries(m.keys).map(([k, v]) => [k, v.bytes])),
        });
        await d.probe(Math.floor(t / 20_000) % PROXIES, t);
        const a = d.meter.kinds.get(`${d.meter.phase}:admit:ADMITTED`);
        say(
          `${which} ${pods} pods t=${simMinute} min: used_memory ${mb(m.usedMemory)} MB` +
            `${m.keys.views ? `, ${m.keys.views.count} live views` : ''}, ${a ? `admit ${summarize(a).meanUs} us` : 'no admission yet'}` +
            `, failed upgrades ${d.outcomes.failedUpstream} of ${d.outcomes.admitted}, no decision ${d.outcomes.decisionErrors}` +
            `${d.meter.oomAtMs !== undefined ? `, OOM since t=${round(d.meter.oomAtMs / 60000, 2)} min` : ''}` +
            `; lag ${round((Date.now() - start - t / o.speedup) / 1000, 1)} s; load average ${os.loadavg()[0].toFixed(1)}`,
        );
      }
      const target = start + t / o.speedup;
      const now = Date.now();
      maxLag = Math.max(maxLag, now - target);
      if (now < target) await sleep(target - now);
      if (now - start > capMs) {
        stoppedEarly = `stopped at simulated ${round(t / 60000, 2)} min: ${round((now - start) / 1000)} s of real time (cap ${round(capMs / 1000)} s)`;
        say(`${which} ${pods} pods: ${stoppedEarly}`);
        break;
      }
    }
    return {
      ...(await result(d, simT, rolloutFrom)),
      simMinutes: round(simT / 60000, 2),
      replacements,
      maxLagMs: Math.round(maxLag),
      wallSeconds: round((Date.now() - wall0) / 1000),
      ...(stoppedEarly ? { stoppedEarly } : {}),
    };
  } finally {
    await server.stop();
  }
}

/** Both designs through the same schedule, one after the other (two Redis servers side by side would share the 2 cores). */
async function fleet(
  pods: number,
  quiet: boolean,
  o: Options,
): Promise<{ pods: number; quiet: boolean; before: DesignRun; after: DesignRun }> {
  const rolloutMin = round((quiet ? QUIET_CHANGES_MS : o.rolloutMs) / 60000, 1);
  say(
    `${pods} pods x ${PROXIES} proxies: ${quiet ? `quiet for ${QUIET_MS / 1000} s, then ` : ''}one pod replaced every ${REPLACE_EVERY_MS / 1000} s ` +
      `for ${rolloutMin} simulated min, ${o.speedup}x faster than real time; before, then after`,
  );
  const before = await runDesign('before', pods, quiet, o);
  const after = await runDesign('after', pods, quiet, o);
  return { pods, quiet, before, after };
}

async function result(d: Design, simMs: number, rolloutFrom: number): Promise<DesignResult> {
  const calls: DesignResult['calls'] = {};
  for (const [key, k] of d.meter.kinds) {
    const [phase, ...kind] = key.split(':');
    (calls[phase] ??= {})[kind.join(':')] = summarize(k);
  }
  const hostChanges: DesignResult['hostChanges'] = {};
  for (const [phase, changes] of Object.entries(d.hostChanges)) {
    const ks = d.hostKinds.map((k) => calls[phase]?.[k]).filter((k): k is KindSummary => k !== undefined);
    const n = ks.reduce((a, k) => a + k.calls, 0);
    hostChanges[phase] = {
      changes,
      redisCallsPerChange: round(n / changes, 2),
      redisUsPerChange: round((ks.reduce((a, k) => a + k.totalMs, 0) * 1000) / changes),
      bytesPerChange: Math.round(ks.reduce((a, k) => a + k.bytesPerCall * k.calls, 0) / changes),
    };
  }
  const simSeconds = (simMs - rolloutFrom) / 1000;
  const rollout = calls.rollout ?? {};
  const ms = (pred: (k: string) => boolean) =>
    round(Object.entries(rollout).reduce((a, [k, v]) => a + (pred(k) ? v.totalMs : 0), 0) / simSeconds, 3);
  const m = await d.memory(true);
  const info = await d.redis.info('memory');
  const peak = Number(/used_memory_peak:(\d+)/.exec(info)![1]);
  const podBytes = d.podKeys.reduce((a, k) => a + (m.keys[k]?.bytes ?? 0), 0);
  const errorstats = (await d.redis.info('errorstats'))
    .split('\n')
    .filter((l) => l.startsWith('errorstat_'))
    .join(' ')
    .trim();
  const cmd = new RegExp(`cmdstat_${d.meter.command}:[^\\r\\n]*`).exec(await d.redis.info('commandstats'))?.[0] ?? '';
  return {
    design: d.name,
    calls,
    outcomes: { ...d.outcomes, failedUpstreamRate: round(d.outcomes.failedUpstream / Math.max(1, d.outcomes.admitted), 4) },
    hostChanges,
    redisMsPerSimSecond: {
      decisions: ms((k) => k.startsWith('admit:') && k !== 'admit:HOSTS'),
      hostChanges: ms((k) => d.hostKinds.includes(k)),
      releases: ms((k) => k.startsWith('release') || k.startsWith('leases:')),
      beats: ms((k) => k === 'beat'),
    },
    memory: {
      emptyUsedMemory: d.emptyUsedMemory,
      usedMemory: m.usedMemory,
      usedMemoryPeak: peak,
      stateBytes: m.usedMemory - d.emptyUsedMemory,
      keys: m.keys,
      podsInFleet: d.s.truth.size,
      bytesPerPod: round(podBytes / d.s.truth.size),
      bytesPerLease: round((m.keys.leases?.bytes ?? 0) / Math.max(1, m.keys.leases?.count ?? 0)),
      series: d.series,
    },
    oom: {
      hit: d.meter.oomAtMs !== undefined || /errorstat_OOM/.test(errorstats),
      firstAtSimMinute: d.meter.oomAtMs === undefined ? null : round(d.meter.oomAtMs / 60000, 2),
      errorstats,
    },
    probes: d.probes,
    commandstats: cmd,
    measurementAnomalies: d.meter.anomalies,
  };
}

// ---------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------

type FleetResult = Awaited<ReturnType<typeof fleet>>;

function tables(quiet: FleetResult, rollouts: FleetResult[], work: HostWork[] | string): string[] {
  const lines: string[] = [];
  const pad = (cells: string[][]) => {
    const w = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)));
    return cells.map((r) => r.map((v, i) => (i < 2 ? v.padEnd(w[i]) : v.padStart(w[i]))).join('  '));
  };
  const x = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '-');
  const base = (d: 'before' | 'after') => {
    const c = quiet[d].calls.quiet ?? {};
    return { admit: c['admit:ADMITTED'], refuse: c.refusal, hosts: quiet[d].hostChanges.rollout };
  };
  const header = [
    'design',
    'fleet',
    'admit us mean/p99',
    'x quiet',
    'refusal us mean/p99',
    'x quiet',
    'B admit',
    'B refusal',
    'host change: calls, us (x10), B (x10)',
    'failed upgrades',
    'no decision',
    'used_memory peak',
    'B/pod',
    'B/lease',
    'OOM',
  ];
  const rows: string[][] = [header];
  const row = (f: FleetResult, d: 'before' | 'after', label: string, phase: string) => {
    const r = f[d];
    const c = r.calls[phase] ?? {};
    const a = c['admit:ADMITTED'];
    const ref = c.refusal;
    const b = base(d);
    const hc = r.hostChanges.rollout;
    rows.push([
      d,
      label,
      a ? `${a.meanUs}/${a.p99Us}` : '-',
      phase === 'quiet' ? '1' : x(a?.meanUs ?? NaN, b.admit?.meanUs ?? NaN),
      ref ? `${ref.meanUs}/${ref.p99Us}` : '-',
      phase === 'quiet' ? '1' : x(ref?.meanUs ?? NaN, b.refuse?.meanUs ?? NaN),
      a ? String(a.bytesPerCall) : '-',
      ref ? String(ref.bytesPerCall) : '-',
      hc
        ? `${hc.redisCallsPerChange}, ${hc.redisUsPerChange} (${x(hc.redisUsPerChange, b.hosts?.redisUsPerChange ?? NaN)}), ` +
          `${hc.bytesPerChange} (${x(hc.bytesPerChange, b.hosts?.bytesPerChange ?? NaN)})`
        : '-',
      phase === 'quiet'
        ? '-'
        : `${r.outcomes.failedUpstream}/${r.outcomes.admitted} (${(r.outcomes.failedUpstreamRate * 100).toFixed(1)}%)`,
      `${r.outcomes.decisionErrors}/${r.outcomes.attempts}`,
      `${mb(r.memory.usedMemoryPeak)} MB`,
      String(r.memory.bytesPerPod),
      String(r.memory.bytesPerLease),
      r.oom.hit ? `yes, t=${r.oom.firstAtSimMinute} min` : 'no',
    ]);
  };
  for (const d of ['before', 'after'] as const) {
    row(quiet, d, `${quiet.pods} quiet`, 'quiet');
    for (const f of rollouts) row(f, d, `${f.pods} rollout`, 'rollout');
  }
  lines.push(...pad(rows));
  lines.push(
    `(x quiet: the mean against the ${quiet.pods}-pod quiet fleet's, target <= 2x; host change = per proxy-level change of its healthy hosts: Redis calls, Redis us and bytes sent, ` +
      `the ${quiet.pods}-pod fleet's from its few replacements (x10: against it); B = bytes sent per call; failed upgrades = admissions pinned to a pod already gone; ` +
      `no decision = Redis answered an error (the filter fails open or closed); memory at the end of each run, the ${quiet.pods}-pod one after its replacements)`,
  );
  // Memory by key, at the end of each fleet's run (MEMORY USAGE SAMPLES 0).
  const keyRows: string[][] = [['design', 'fleet', 'used_memory', 'state', 'keys: bytes (members or fields)']];
  for (const f of [quiet, ...rollouts]) {
    for (const d of ['before', 'after'] as const) {
      const m = f[d].memory;
      keyRows.push([
        d,
        String(f.pods),
        `${mb(m.usedMemory)} MB`,
        `${mb(m.stateBytes)} MB`,
        Object.entries(m.keys)
          .map(([k, v]) => `${k} ${v.bytes >= 1048576 ? `${mb(v.bytes)} MB` : `${v.bytes} B`} (${v.count})`)
          .join(', '),
      ]);
    }
  }
  lines.push('', ...pad(keyRows));
  // Host changes: Redis per call, and outside Redis per change.
  const hostRows: string[][] = [
    [
      'design',
      'fleet',
      'host calls',
      'us mean/p99/max',
      'B per call (max)',
      'Redis ms per sim s: decisions/hosts/releases/beats',
      'outside Redis per change',
    ],
  ];
  for (const f of [quiet, ...rollouts]) {
    const w = typeof work === 'string' ? undefined : work.find((x2) => x2.pods === f.pods);
    for (const d of ['before', 'after'] as const) {
      const r = f[d];
      const c = r.calls.rollout ?? {};
      const kinds = d === 'before' ? ['register_view'] : ['hosts:add', 'hosts:remove'];
      const ks = kinds.map((k) => c[k]).filter((k): k is KindSummary => k !== undefined);
      const t = r.redisMsPerSimSecond;
      hostRows.push([
        d,
        String(f.pods),
        ks.map((k, i) => `${kinds[i]} ${k.calls}`).join(', ') || '-',
        ks.map((k) => `${k.meanUs}/${k.p99Us}/${k.maxUs}`).join(', ') || '-',
        ks.map((k) => `${k.bytesPerCall} (${k.bytesMax})`).join(', ') || '-',
        `${t.decisions}/${t.hostChanges}/${t.releases}/${t.beats}`,
        !w
          ? 'not measured'
          : d === 'before'
            ? `every worker: ${w.beforeWorkerMs} ms (parse ${w.beforeWorkerParseMs} + view id ${w.beforeWorkerViewIdMs}; file ${w.hostFileBytes} B)`
            : `workers 0; the agent, every poll: /clusters parse ${w.afterAgentParseClustersMs} ms + diff ${w.afterAgentSyncMs} ms (${mb(w.clustersBytes)} MB)`,
      ]);
    }
  }
  lines.push('', ...pad(hostRows));
  return lines;
}

export async function run(): Promise<Record<string, unknown>> {
  const o: Options = {
    speedup: Number(process.env.BENCH_CHURN_SPEEDUP ?? 15),
    rolloutMs: Number(process.env.BENCH_CHURN_MINUTES ?? 11) * 60_000,
    seed: Number(process.env.BENCH_CHURN_SEED ?? 18),
  };
  const sizes = (process.env.BENCH_CHURN_SIZES ?? '1000,10000').split(',').map(Number);
  if (!(o.speedup >= 1) || !(o.rolloutMs >= 60_000))
    throw new Error('churn: BENCH_CHURN_SPEEDUP must be >= 1 and BENCH_CHURN_MINUTES >= 1');
  const load0 = os.loadavg()[0];
  say(`worker and agent work per host change (LuaJIT): ${[QUIET_PODS, ...sizes].join(', ')} pods`);
  const work = hostWork([QUIET_PODS, ...sizes]);
  const quiet = await fleet(QUIET_PODS, true, o);
  const rollouts: FleetResult[] = [];
  for (const n of sizes) rollouts.push(await fleet(n, false, o));
  const table = tables(quiet, rollouts, work);
  const machine = `load average ${load0.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end, ${os.cpus().length} CPUs`;
  process.stdout.write(`${table.join('\n')}\n${machine}\n`);
  const ratios: Record<string, unknown> = {};
  for (const d of ['before', 'after'] as const) {
    const q = quiet[d].calls.quiet ?? {};
    for (const f of rollouts) {
      const c = f[d].calls.rollout ?? {};
      const r = (a?: KindSummary, b?: KindSummary, k: 'meanUs' | 'bytesPerCall' = 'meanUs') => (a && b ? round(a[k] / b[k], 2) : null);
      const hc = f[d].hostChanges.rollout;
      const hq = quiet[d].hostChanges.rollout;
      ratios[`${d}_${f.pods}`] = {
        hostChangeUs: hc && hq ? round(hc.redisUsPerChange / hq.redisUsPerChange, 2) : null,
        hostChangeBytes: hc && hq ? round(hc.bytesPerChange / hq.bytesPerChange, 2) : null,
        admitUs: r(c['admit:ADMITTED'], q['admit:ADMITTED']),
        refusalUs: r(c.refusal, q.refusal),
        admitBytes: r(c['admit:ADMITTED'], q['admit:ADMITTED'], 'bytesPerCall'),
        refusalBytes: r(c.refusal, q.refusal, 'bytesPerCall'),
      };
    }
  }
  return {
    setup:
      `${PROXIES} proxies; one pod replaced every ${REPLACE_EVERY_MS / 1000} s, each proxy seeing it 0-${SEEN_LATE_MS / 1000} s late; ` +
      `${ADMITS_PER_S} admissions/s held ${HOLD_MS[0] / 1000}-${HOLD_MS[1] / 1000} s, ${MAX_PER_POD} per pod; rollouts of ${o.rolloutMs / 60000} simulated min at ${o.speedup}x; ` +
      `before = ${BEFORE_COMMIT} scripts (EVALSHA, views published at the ${PROBE_MS / 1000} s probe; view TTL and touch / ${o.speedup}), after = the Functions library (FCALL, changes within ${POLL_MS / 1000} s); ` +
      `redis.conf of the stack (maxmemory ${MAX_MEMORY}, noeviction), one server per design; ${machine}`,
    ratiosToQuiet10: ratios,
    target:
      'admission and refusal <= 2x the quiet 10-pod fleet (Redis time and bytes per call) at 1,000 and 10,000 pods during the rollout; no OOM',
    hostWork: work,
    quiet,
    rollouts,
    table,
  };
}

runAlone(module, run);
