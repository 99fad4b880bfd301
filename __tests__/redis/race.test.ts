import * as fs from 'fs';
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../../tools/rig/redis-server';
import { Functions } from './support/functions';
import { buildWorker, recordCommands, replayLeases, runWorkers } from './support/workers';
import type { WorkerConfig, WorkerResult } from './support/race-worker';

/*
 * Separate OS processes race for 5 pods with 2 slots each (ws_admit, each process a proxy
 * with its own registered hosts). The audit does not trust the functions' replies: MONITOR
 * logs every command Redis executes (those the functions run included) in execution order,
 * and replaying the writes to the leases set rebuilds every state it went through, so
 * every pod's count at every instant.
 */
const PODS = ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080', '10.1.0.4:8080', '10.1.0.5:8080'];
const PROCS = 10;

let server: RedisServer;
let redis: Redis;
let s: Functions;
let worker: { entry: string; dir: string };

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  await redis.connect();
  s = await Functions.load(redis, 'race');
  worker = buildWorker();
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
  fs.rmSync(worker.dir, { recursive: true, force: true });
});
beforeEach(async () => {
  // FLUSHALL keeps the library; the state starts again with a new epoch.
  await redis.flushall();
  s.forget();
  await s.start();
});

const cfg = (i: number, over: Partial<WorkerConfig>): WorkerConfig => ({
  port: server.port,
  tag: 'race',
  proxy: `envoy-${i}`,
  mode: 'hold',
  loops: 4,
  pods: PODS,
  maxPerPod: 2,
  rateLimit: 0,
  windowMs: 60000,
  ttlMs: 60000,
  ...over,
});
const sum = (rs: WorkerResult[], f: (r: WorkerResult) => number) => rs.reduce((a, r) => a + f(r), 0);

test('hundreds of concurrent attempts from 10 processes: exactly 10 admitted, never 3 on a pod', async () => {
  const rec = await recordCommands(server.port);
  const results = await runWorkers(
    worker.entry,
    Array.from({ length: PROCS }, (_, i) => cfg(i, { mode: 'hold', loops: 4, attempts: 10 })),
  );
  const log = await rec.stop();

  expect(results).toHaveLength(PROCS);
  expect(results.flatMap((r) => r.errors)).toEqual([]);
  expect(sum(results, (r) => r.attempts)).toBe(400);
  const admitted = results.flatMap((r) => r.admitted);
  expect(admitted).toHaveLength(10);
  expect(sum(results, (r) => r.refused.FULL ?? 0)).toBe(390);

  // Audit from Redis' own execution log.
  const { max, final } = replayLeases(log, s.keys.leases);
  expect([...max.keys()].sort()).toEqual([...PODS].sort());
  for (const [pod, m] of max) expect({ pod, max: m }).toEqual({ pod, max: 2 });
  // ... and it matches the live state, the pods' counts and what the processes were told.
  const { leases, load } = await s.counts();
  for (const pod of PODS) {
    const told = admitted
      .filter((a) => a.pod === pod)
      .map((a) => a.id)
      .sort();
    expect((final.get(pod) ?? []).sort()).toEqual(told);
    expect({ pod, leases: leases[pod], load: load[pod] }).toEqual({ pod, leases: 2, load: 2 });
  }
  const perProxy: Record<string, string> = {};
  for (const r of results) if (r.admitted.length) perProxy[`leases:${r.admitted[0].id.split('|')[0]}`] = String(r.admitted.length);
  expect(await redis.hgetall(s.keys.stats)).toEqual({ epoch: 'feedfacefeedface', admitted: '10', rejected_capacity: '390', ...perProxy });
});

test('churn (acquire, hold 1-5 ms, release) from 10 processes stays within limits and ends with zero leases', async () => {
  const rec = await recordCommands(server.port);
  const results = await runWorkers(
    worker.entry,
    Array.from({ length: PROCS }, (_, i) => cfg(i, { mode: 'churn', loops: 3, durationMs: 1500, holdMs: [1, 5] })),
  );
  const log = await rec.stop();

  expect(results).toHaveLength(PROCS);
  expect(results.flatMap((r) => r.errors)).toEqual([]);
  const admitted = sum(results, (r) => r.admitted.length);
  const full = sum(results, (r) => r.refused.FULL ?? 0);
  // There was real contention: more takers than the 10 slots, many times over.
  expect(admitted).toBeGreaterThan(100);
  expect(full).toBeGreaterThan(100);
  // Every lease handed out was still there when its holder gave it back.
  expect(results.flatMap((r) => r.releaseLost)).toEqual([]);
  expect(sum(results, (r) => r.releasedOk)).toBe(admitted);

  const { max, final } = replayLeases(log, s.keys.leases);
  expect(max.size).toBe(5);
  for (const m of max.values()) expect(m).toBeLessThanOrEqual(2);
  expect(final.size).toBe(0);
  // The functions' own view agrees: no reply ever reported more than 2 on a pod.
  expect(Math.max(...results.flatMap((r) => r.admitted.map((a) => a.activeOnPod)))).toBeLessThanOrEqual(2);
  expect(await redis.zcard(s.keys.leases)).toBe(0);
  expect(await s.counts()).toEqual({ leases: {}, load: {}, byProxy: {}, proxyFields: {}, byClient: {}, clientFields: {} });
  const st = await redis.hgetall(s.keys.stats);
  expect(Number(st.admitted)).toBe(admitted);
  expect(Number(st.released)).toBe(admitted);
  expect(Number(st.rejected_capacity)).toBe(full);
});

test('a proxy killed while holding leases: its slots come back within the lease TTL', async () => {
  const ttlMs = 400;
  // One process takes all 10 slots and is killed with SIGKILL (no release ever runs).
  const results = await runWorkers(worker.entry, [cfg(0, { mode: 'churn', loops: 10, durationMs: 60000, holdMs: [60000, 60000], ttlMs })], {
    onRunning: async (children) => {
      const deadline = Date.now() + 5000;
      while ((await redis.zcard(s.keys.leases)) < 10) {
        if (Date.now() > deadline) throw new Error('the worker did not take all 10 slots');
        await new Promise((r) => setTimeout(r, 5));
      }
      children[0].kill('SIGKILL');
    },
    killedLeaveNoResult: true,
  });
  expect(results).toEqual([]); // killed: no report
  const killedAt = await s.nowMs();
  const req = { rateLimit: 0, windowMs: 60000, maxPerPod: 2, ttlMs, pods: PODS };
  expect((await s.admit({ ...req, id: 'after-kill|0|0|0' })).status).toBe('FULL');
  const latestExpiry = Number((await redis.zrange(s.keys.leases, -1, -1, 'WITHSCORES'))[1]);
  expect(latestExpiry - killedAt).toBeLessThanOrEqual(ttlMs);
  while ((await s.nowMs()) <= latestExpiry) await new Promise((r) => setTimeout(r, 10));
  for (let i = 0; i < 10; i++) expect((await s.admit({ ...req, id: `new|0|${i}|0` })).status).toBe('ADMITTED');
  expect(Number(await redis.hget(s.keys.stats, 'expired'))).toBe(10);
});
