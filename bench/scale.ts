/**
 * Admission cost by fleet size, part of `npm run bench`: Redis time per decision (INFO
 * commandstats, the server's own measure) and bytes sent per call, at 10, 100, 1,000 and
 * 10,000 healthy backend pods, for an admission (every pod holds 1 of 2 leases) and a
 * refusal (every pod full). Each figure is also given as a ratio to the same path at 10
 * pods (issue 9's target: at most 2x at 1,000 and 10,000).
 *
 * After: the Functions library (`FCALL ws_admit`, the caller's pods registered as the bits
 * of its slot with ws_hosts, as the agent does). Before: commit BEFORE_COMMIT's admit.lua
 * (`EVALSHA` with the caller's host view id, the view registered with that commit's
 * register_view.lua), read with `git show` and measured in the same run on the same
 * server. Both with one steady fleet: what a rollout does to either is the `churn` part.
 * (The older contract this part first compared against, with its refusal hint and its n
 * keys per call, is gone from both sides: 16e3563 had neither.)
 *
 * Run alone: `npx tsc && node bench/scale.js`. BENCH_SCALE_PODS (default
 * 10,100,1000,10000), BENCH_SCALE_CALLS (default 200 calls per figure).
 */
import Redis from 'ioredis';
import { startRedis } from '../tools/rig/redis-server';
import { Functions } from '../__tests__/redis/support/functions';
import { BEFORE_COMMIT, beforeKeys, beforeScript } from './before';
import { commandUsec, respBytes } from './measure';
import { runAlone } from './alone';

const TAG = 'b';
const PROXY = 'ws-envoy-6f7c9d8b5d-x7k2p'; // a proxy id as the filter takes it from POD_NAME
const VIEW = '0123456789abcdef';
const HOUR = 3600 * 1000;

const podId = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
/** A connection id as the filter makes them: <proxy>|<worker>|<counter>|<random>. */
const connId = (label: string, i: number) => `${PROXY}|a1b2c3|${label}${i}|5a9f01`;

interface Contract {
  /** The Redis command whose commandstats are the decision's (evalsha or fcall). */
  readonly command: 'evalsha' | 'fcall';
  /** Registers the caller's healthy hosts and loads the state: every pod with `perPod` long-lived leases. */
  fill(pods: string[], perPod: number, tagOfLease: string): Promise<void>;
  /** The decision for connection `id`, as sent on the wire. */
  call(id: string): string[];
  /** Undoes an admission with plain commands (so they do not count as the decision's command). */
  undo(id: string, pod: string): Promise<void>;
  /** An empty state, ready to admit. */
  reset(): Promise<void>;
}

/** Leases of `perPod` per pod with plain commands: `leases` members and `load` counts. */
async function addLeases(redis: Redis, k: { leases: string; load: string }, pods: string[], perPod: number, tagOfLease: string) {
  const expiry = Date.now() + HOUR;
  for (let i = 0; i < pods.length; i += 500) {
    const p = redis.pipeline();
    for (const pod of pods.slice(i, i + 500)) {
      for (let j = 0; j < perPod; j++) p.zadd(k.leases, expiry, `x|0|${tagOfLease}${j}|0 ${pod}`);
      p.zincrby(k.load, perPod, pod);
    }
    await p.exec();
  }
}

/** Today's contract: ws_admit; the caller's pods are its slot's bits in `reach`. */
function after(redis: Redis): Contract {
  const f = new Functions(redis, TAG);
  const k = f.keys;
  return {
    command: 'fcall',
    async fill(pods, perPod, tagOfLease) {
      if (perPod === 1) await f.reach(PROXY, pods); // registered once per state, as the agent does
      await addLeases(redis, k, pods, perPod, tagOfLease);
    },
    // The per-client limits off (0 0 0, an id without a client key): the `clients` part measures them.
    call: (id) => [
      'FCALL',
      'ws_admit',
      String(f.admitKeys().length),
      ...f.admitKeys(),
      '60',
      '60000',
      '2',
      String(HOUR),
      id,
      '0',
      '0',
      '0',
    ],
    undo: (id, pod) => undoAdmission(redis, k, id, pod),
    async reset() {
      await redis.flushall();
      f.forget();
      await f.start();
    },
  };
}

/** Takes one admission back with plain commands (both contracts keep the same lease, load, rate and stats keys). */
async function undoAdmission(
  redis: Redis,
  k: { leases: string; load: string; rate: string; stats: string },
  id: string,
  pod: string,
): Promise<void> {
  await redis
    .multi()
    .zrem(k.leases, `${id} ${pod}`)
    .zincrby(k.load, -1, pod)
    .zrem(k.rate, id)
    .hincrby(k.stats, `leases:${PROXY}`, -1)
    .exec();
}

/** The contract before: admit.lua with 6 keys and the caller's view id (its pods registered once with register_view.lua). */
function before(redis: Redis, sha: { admit: string; registerView: string }): Contract {
  const k = beforeKeys(TAG);
  return {
    command: 'evalsha',
    async fill(pods, perPod, tagOfLease) {
      if (perPod === 1) await redis.evalsha(sha.registerView, 3, k.views, k.hosts, k.load, VIEW, ...pods);
      await addLeases(redis, k, pods, perPod, tagOfLease);
    },
    call: (id) => [
      'EVALSHA',
      sha.admit,
      '6',
      k.rate,
      k.stats,
      k.leases,
      k.load,
      k.views,
      k.hosts,
      '60',
      '60000',
      '2',
      String(HOUR),
      id,
      VIEW,
      'e1',
    ],
    undo: (id, pod) => undoAdmission(redis, k, id, pod),
    async reset() {
      await redis.flushall();
      await redis.hset(k.stats, 'epoch:id', 'e1');
    },
  };
}

interface Figures {
  admitUs: number;
  refuseUs: number;
  bytesPerCall: number;
}

async function usecPerCall(redis: Redis, command: string): Promise<number> {
  const s = commandUsec(await redis.info('commandstats')).get(command);
  return s ? s.usec / s.calls : NaN;
}

async function measure(redis: Redis, c: Contract, n: number, calls: number): Promise<Figures> {
  await c.reset();
  const pods = Array.from({ length: n }, (_, i) => podId(i));
  await c.fill(pods, 1, 'a');
  await redis.config('RESETSTAT');
  for (let i = 0; i < calls; i++) {
    const id = connId('p', i);
    const r = (await redis.call(...(c.call(id) as [string, ...string[]]))) as unknown[];
    if (r[0] !== 'ADMITTED') throw new Error(`scale bench: expected ADMITTED at ${n} pods, got ${JSON.stringify(r)}`);
    await c.undo(id, String(r[1]));
  }
  const admitUs = await usecPerCall(redis, c.command);
  await c.fill(pods, 1, 'b');
  await redis.config('RESETSTAT');
  for (let i = 0; i < calls; i++) {
    const r = (await redis.call(...(c.call(connId('q', i)) as [string, ...string[]]))) as unknown[];
    if (r[0] !== 'FULL') throw new Error(`scale bench: expected FULL at ${n} pods, got ${JSON.stringify(r)}`);
  }
  const refuseUs = await usecPerCall(redis, c.command);
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return { admitUs: r2(admitUs), refuseUs: r2(refuseUs), bytesPerCall: respBytes(c.call(connId('p', 0))) };
}

export async function run(): Promise<Record<string, unknown>> {
  const sizes = (process.env.BENCH_SCALE_PODS ?? '10,100,1000,10000').split(',').map(Number);
  const calls = Number(process.env.BENCH_SCALE_CALLS ?? 200);
  const server = await startRedis();
  const redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  try {
    await redis.connect();
    await Functions.load(redis, TAG);
    const now = after(redis);
    const [oldAdmit, oldRegister] = [beforeScript('admit'), beforeScript('register_view')];
    const old =
      oldAdmit && oldRegister
        ? before(redis, {
            admit: String(await redis.script('LOAD', oldAdmit)),
            registerView: String(await redis.script('LOAD', oldRegister)),
          })
        : undefined;
    const rows: Record<string, unknown>[] = [];
    let base: Figures | undefined;
    let baseBefore: Figures | undefined;
    const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
    for (const n of sizes) {
      // Interleaved by size so drift in the machine's load falls on both.
      const a = await measure(redis, now, n, calls);
      base ??= a;
      const row: Record<string, unknown> = {
        pods: n,
        ...a,
        admitX10: ratio(a.admitUs, base.admitUs),
        refuseX10: ratio(a.refuseUs, base.refuseUs),
        bytesX10: ratio(a.bytesPerCall, base.bytesPerCall),
      };
      if (old) {
        const b = await measure(redis, old, n, calls);
        baseBefore ??= b;
        row.before = {
          ...b,
          admitX10: ratio(b.admitUs, baseBefore.admitUs),
          refuseX10: ratio(b.refuseUs, baseBefore.refuseUs),
          bytesX10: ratio(b.bytesPerCall, baseBefore.bytesPerCall),
        };
        row.afterVsBefore = {
          admit: ratio(a.admitUs, b.admitUs),
          refuse: ratio(a.refuseUs, b.refuseUs),
          bytes: ratio(a.bytesPerCall, b.bytesPerCall),
        };
      }
      rows.push(row);
    }
    const table = [
      'pods    after: admit us (x10)  refuse us (x10)  bytes   before: admit us (x10)  refuse us (x10)  bytes',
      ...rows.map((r) => {
        const b = r.before as (Figures & { admitX10: number; refuseX10: number }) | undefined;
        const cell = (us: number, x: number) => `${us.toFixed(1)} (${x.toFixed(2)})`.padStart(15);
        return (
          `${String(r.pods).padEnd(6)}  ${cell(r.admitUs as number, r.admitX10 as number)}  ${cell(r.refuseUs as number, r.refuseX10 as number)}` +
          `  ${String(r.bytesPerCall).padStart(5)}   ${b ? `${cell(b.admitUs, b.admitX10)}  ${cell(b.refuseUs, b.refuseX10)}  ${String(b.bytesPerCall).padStart(5)}` : 'not measured'}`
        );
      }),
    ];
    process.stdout.write(`scale:\n${table.join('\n')}\n`);
    return {
      method:
        'Redis usec per decision (INFO commandstats of FCALL / EVALSHA, the mean over the calls), one client, one steady fleet; every pod 1 of 2 leases for the admission, 2 of 2 for the refusal; xX10 = ratio to the same path at the first size',
      after: 'FCALL ws_admit (lua/redis/ws_admission.lua), the pods registered with ws_hosts',
      before: old
        ? `EVALSHA admit.lua of commit ${BEFORE_COMMIT} (git show), the pods registered as one view with its register_view.lua`
        : 'not measured (no git history here)',
      rows,
      table,
      target: 'admitX10 and refuseX10 <= 2 at 1,000 and 10,000 pods',
    };
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

runAlone(module, run);
