import * as fs from 'fs';
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../../tools/rig/redis-server';
import { Functions } from './support/functions';
import { buildWorker, recordCommands, runWorkers } from './support/workers';

/*
 * Sliding-window accuracy of ws_admit under concurrent demand from 8 processes. The
 * admission times are the scores the function itself wrote into the window set, taken
 * from Redis' execution log (MONITOR), so every admission is seen even after the function
 * has trimmed it out of the window.
 */
const WINDOW_MS = 400;
const LIMIT = 5;
const DURATION_MS = 2200;

let server: RedisServer;
let redis: Redis;
let s: Functions;
let worker: { entry: string; dir: string };

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  await redis.connect();
  s = await Functions.load(redis, 'rl');
  worker = buildWorker();
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
  fs.rmSync(worker.dir, { recursive: true, force: true });
});

test(`8 processes over ~5 windows: never more than ${LIMIT} in any rolling ${WINDOW_MS} ms, and the limit is reached`, async () => {
  const rec = await recordCommands(server.port);
  let startMs = 0;
  const results = await runWorkers(
    worker.entry,
    Array.from({ length: 8 }, (_, i) => ({
      port: server.port,
      tag: 'rl',
      proxy: `envoy-${i}`,
      mode: 'rate' as const,
      loops: 2,
      durationMs: DURATION_MS,
      pods: ['10.2.0.1:8080', '10.2.0.2:8080', '10.2.0.3:8080'],
      maxPerPod: 1000,
      rateLimit: LIMIT,
      windowMs: WINDOW_MS,
      ttlMs: 5000,
    })),
    {
      onStarted: async () => {
        startMs = await s.nowMs();
      },
    },
  );
  const endMs = await s.nowMs();
  const log = await rec.stop();

  expect(results).toHaveLength(8);
  expect(results.flatMap((r) => r.errors)).toEqual([]);
  const admittedIds = results.flatMap((r) => r.admitted.map((a) => a.id));
  const refused = results.reduce((a, r) => a + (r.refused.RATE_LIMITED ?? 0), 0);
  expect(refused).toBeGreaterThan(admittedIds.length); // demand far above the limit

  // Every admission, in execution order, with the Redis time the function stamped.
  const stamps = log
    .filter((c) => c.fromFunction && c.args[0].toUpperCase() === 'ZADD' && c.args[1] === s.keys.rate)
    .map((c) => ({ at: Number(c.args[2]), id: c.args[3] }));
  expect(stamps.map((x) => x.id).sort()).toEqual([...admittedIds].sort());
  const t = stamps.map((x) => x.at);
  for (let i = 1; i < t.length; i++) expect(t[i]).toBeGreaterThanOrEqual(t[i - 1]);

  // Never more than LIMIT in any rolling window: an entry counts while
  // now - WINDOW_MS < at <= now, so LIMIT+1 stamps must span at least WINDOW_MS.
  const violations = [];
  for (let i = 0; i + LIMIT < t.length; i++) if (t[i + LIMIT] - t[i] < WINDOW_MS) violations.push([t[i], t[i + LIMIT]]);
  expect(violations).toEqual([]);

  // The limit is reached: the first LIMIT admissions come at once, and each slot
  // is reused promptly once its entry leaves the window (demand never stopped).
  const SLACK_MS = 100; // scheduling on a busy 2-CPU runner, not the function's behaviour
  expect(t.length).toBeGreaterThanOrEqual(LIMIT);
  expect(t[LIMIT - 1] - startMs).toBeLessThan(SLACK_MS * 2);
  const late = [];
  for (let i = 0; t[i] + WINDOW_MS + SLACK_MS < endMs - 200; i++) {
    if (!(i + LIMIT < t.length && t[i + LIMIT] - t[i] <= WINDOW_MS + SLACK_MS)) late.push([i, t[i], t[i + LIMIT]]);
  }
  expect(late).toEqual([]);
  const windows = (endMs - startMs) / WINDOW_MS;
  expect(t.length).toBeGreaterThanOrEqual(LIMIT * Math.floor((windows * WINDOW_MS) / (WINDOW_MS + SLACK_MS)));
  expect(t.length).toBeLessThanOrEqual(LIMIT * Math.ceil(windows));

  // Stats agree with the log.
  const st = await redis.hgetall(s.keys.stats);
  expect(Number(st.admitted)).toBe(t.length);
  expect(Number(st.rejected_rate_limited)).toBe(refused);
});
