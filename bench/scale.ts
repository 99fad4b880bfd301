/**
 * Admission cost by fleet size, part of `npm run bench`: Redis time per admit.lua call
 * (INFO commandstats, the server's own measure) and bytes sent per call, at 10, 100,
 * 1,000 and 10,000 healthy backend pods, for an admission (every pod holds 1 of 2
 * leases) and a refusal (every pod full). Each figure is also given as a ratio to the
 * same path at 10 pods (issue 9's target: at most 2x at 1,000 and 10,000).
 *
 * "Before": the contract until commit BEFORE_COMMIT (every call carried the n lease-set
 * keys and n pod ids and read every candidate's set), measured in the same run from
 * `git show` of that commit's admit.lua, when git and the commit are at hand.
 *
 * Run alone: `npx tsc && node bench/scale.js`. BENCH_SCALE_PODS (default
 * 10,100,1000,10000), BENCH_SCALE_CALLS (default 200 calls per figure).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import { startRedis } from '../__tests__/support/redis-server';

const ROOT = path.resolve(__dirname, '..');
const BEFORE_COMMIT = '6d17334';
const T = '{b}';
const ID = 'ws-envoy-6f7c9d8b5d-x7k2p|a1b2c3|17|5a9f01'; // a connection id as the filter makes them
const VIEW = '0123456789abcdef';

const podId = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;

/** Bytes of one command as RESP on the wire (what the filter sends). */
function wireBytes(args: readonly string[]): number {
  let b = `*${args.length}\r\n`.length;
  for (const a of args) b += `$${Buffer.byteLength(a)}\r\n`.length + Buffer.byteLength(a) + 2;
  return b;
}

async function usecPerEvalsha(redis: Redis): Promise<number> {
  const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats'));
  return m ? Number(m[2]) / Number(m[1]) : NaN;
}

interface Contract {
  /** Loads the state: every pod with `perPod` long-lived leases. */
  fill(redis: Redis, pods: string[], perPod: number, tagOfLease: string): Promise<void>;
  /** The admit.lua call for connection `id` (EVALSHA and its arguments). */
  call(sha: string, pods: string[], id: string): string[];
  /** Undoes an admission (a plain command, so it does not count as EVALSHA). */
  undo(redis: Redis, id: string, pod: string): Promise<void>;
}

const HOUR = 3600 * 1000;

/** Today's contract: six keys, the view id; pods by count in `load`. */
const after: Contract = {
  async fill(redis, pods, perPod, tagOfLease) {
    const expiry = Date.now() + HOUR;
    for (let i = 0; i < pods.length; i += 500) {
      const p = redis.pipeline();
      for (const pod of pods.slice(i, i + 500)) {
        p.zadd(`${T}:hosts`, 0, `${VIEW} ${pod}`);
        for (let j = 0; j < perPod; j++) p.zadd(`${T}:leases`, expiry, `x|0|${tagOfLease}${j}|0 ${pod}`);
        p.zincrby(`${T}:load`, perPod, pod);
      }
      await p.exec();
    }
    await redis.zadd(`${T}:views`, Date.now(), VIEW);
  },
  call: (sha, _pods, id) => [
    'EVALSHA',
    sha,
    '6',
    `${T}:rate`,
    `${T}:stats`,
    `${T}:leases`,
    `${T}:load`,
    `${T}:views`,
    `${T}:hosts`,
    '60',
    '60000',
    '2',
    String(HOUR),
    id,
    VIEW,
    'e1',
  ],
  async undo(redis, id, pod) {
    await redis.multi().zrem(`${T}:leases`, `${id} ${pod}`).zincrby(`${T}:load`, -1, pod).zrem(`${T}:rate`, id).exec();
  },
};

/** The contract before: 3+n keys, 5+n arguments, every candidate's lease set read. */
const before: Contract = {
  async fill(redis, pods, perPod, tagOfLease) {
    const expiry = Date.now() + HOUR;
    for (let i = 0; i < pods.length; i += 500) {
      const p = redis.pipeline();
      for (const pod of pods.slice(i, i + 500)) {
        for (let j = 0; j < perPod; j++) p.zadd(`${T}:pod:${pod}`, expiry, `x|0|${tagOfLease}${j}|0`);
        p.sadd(`${T}:pods`, pod);
      }
      await p.exec();
    }
  },
  call: (sha, pods, id) => [
    'EVALSHA',
    sha,
    String(3 + pods.length),
    `${T}:rate`,
    `${T}:stats`,
    `${T}:pods`,
    ...pods.map((p) => `${T}:pod:${p}`),
    '60',
    '60000',
    '2',
    String(HOUR),
    id,
    ...pods,
    'e1',
  ],
  async undo(redis, id, pod) {
    await redis.multi().zrem(`${T}:pod:${pod}`, id).zrem(`${T}:rate`, id).exec();
  },
};

interface Figures {
  admitUs: number;
  refuseUs: number;
  bytesPerCall: number;
  refuseExactUs?: number;
}

async function measure(redis: Redis, c: Contract, sha: string, n: number, calls: number, isBefore: boolean): Promise<Figures> {
  await redis.flushall();
  await redis.hset(`${T}:stats`, 'epoch:id', 'e1');
  const pods = Array.from({ length: n }, (_, i) => podId(i));
  await c.fill(redis, pods, 1, 'a');
  // The contract before costs ~1.5 ms per call per 100 pods: fewer calls at large sizes.
  const k = isBefore ? Math.max(20, Math.min(calls, Math.round((calls * 1000) / n))) : calls;
  await redis.config('RESETSTAT');
  for (let i = 0; i < k; i++) {
    const id = `p|w|${i}|a`;
    const r = (await redis.call(...(c.call(sha, pods, id) as [string, ...string[]]))) as unknown[];
    if (r[0] !== 'ADMITTED') throw new Error(`scale bench: expected ADMITTED at ${n} pods, got ${JSON.stringify(r)}`);
    await c.undo(redis, id, String(r[1]));
  }
  const admitUs = await usecPerEvalsha(redis);
  await c.fill(redis, pods, 1, 'b');
  const refuse = async (beforeEach?: () => Promise<unknown>) => {
    await redis.config('RESETSTAT');
    for (let i = 0; i < k; i++) {
      if (beforeEach) await beforeEach();
      const r = (await redis.call(...(c.call(sha, pods, `q|w|${i}|a`) as [string, ...string[]]))) as unknown[];
      if (r[0] !== 'FULL') throw new Error(`scale bench: expected FULL at ${n} pods, got ${JSON.stringify(r)}`);
    }
    return usecPerEvalsha(redis);
  };
  // Before: the steady-state refusal answered from the "all full" hint, and the exact one
  // (the first after a release) that counted every candidate.
  const refuseUs = await refuse();
  const refuseExactUs = isBefore ? await refuse(() => redis.hdel(`${T}:stats`, 'hint:full')) : undefined;
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    admitUs: r2(admitUs),
    refuseUs: r2(refuseUs),
    bytesPerCall: wireBytes(c.call(sha, pods, ID)),
    ...(refuseExactUs !== undefined ? { refuseExactUs: r2(refuseExactUs) } : {}),
  };
}

function beforeScript(): string | undefined {
  const r = spawnSync('git', ['show', `${BEFORE_COMMIT}:lua/redis/admit.lua`], { cwd: ROOT, encoding: 'utf8' });
  return r.status === 0 ? r.stdout : undefined;
}

export async function run(): Promise<Record<string, unknown>> {
  const sizes = (process.env.BENCH_SCALE_PODS ?? '10,100,1000,10000').split(',').map(Number);
  const calls = Number(process.env.BENCH_SCALE_CALLS ?? 200);
  const server = await startRedis();
  const redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  try {
    await redis.connect();
    const sha = String(await redis.script('LOAD', fs.readFileSync(path.join(ROOT, 'lua', 'redis', 'admit.lua'), 'utf8')));
    const old = beforeScript();
    const oldSha = old ? String(await redis.script('LOAD', old)) : undefined;
    const rows: Record<string, unknown>[] = [];
    let base: Figures | undefined;
    let baseBefore: Figures | undefined;
    const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
    for (const n of sizes) {
      const now = await measure(redis, after, sha, n, calls, false);
      base ??= now;
      const row: Record<string, unknown> = {
        pods: n,
        ...now,
        admitX10: ratio(now.admitUs, base.admitUs),
        refuseX10: ratio(now.refuseUs, base.refuseUs),
        bytesX10: ratio(now.bytesPerCall, base.bytesPerCall),
      };
      if (oldSha) {
        const b = await measure(redis, before, oldSha, n, calls, true);
        baseBefore ??= b;
        row.before = {
          ...b,
          admitX10: ratio(b.admitUs, baseBefore.admitUs),
          refuseExactX10: ratio(b.refuseExactUs!, baseBefore.refuseExactUs!),
          bytesX10: ratio(b.bytesPerCall, baseBefore.bytesPerCall),
        };
      }
      rows.push(row);
    }
    return {
      method:
        'Redis usec per admit.lua call (INFO commandstats, the mean over the calls), one client; every pod 1 of 2 leases for the admission, 2 of 2 for the refusal; xX10 = ratio to the same path at the first size',
      before: oldSha ? `admit.lua of commit ${BEFORE_COMMIT} (git show)` : 'not measured (no git history here)',
      rows,
      target: 'admitX10 and refuseX10 <= 2 at 1,000 and 10,000 pods',
    };
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

if (require.main === module) {
  run().then(
    (r) => console.log(JSON.stringify(r, null, 2)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
