// The metrics view against the real metrics endpoint of the data-plane harness:
// lua/envoy/metrics.lua and filter.lua under LuaJIT, against a real redis-server.
// RECORD_METRICS=<file> writes the scraped text (the recorded fixture came from here).
import * as fs from 'fs';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, openSocket } from '../filter/harness/worker';
import { parseExposition } from '../../tools/lib/prometheus';
import { renderScreen, snapshotFrom } from '../../tools/lib/metrics-view';
import { EXPORTED_METRICS } from '../../tools/lib/metrics-contract';

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await fleet?.closeAll();
  await redis.stop();
});

const settings = { max_connections_per_pod: 2, lease_ttl_ms: 30000, renew_interval_ms: 5000, rate_limit: 8, rate_window_ms: 60000 };

it('renders the harness endpoint: per-pod bars, refusals by reason, rate window, Redis up', async () => {
  fleet = new Fleet(redis.port);
  const a = await fleet.worker(settings, { podName: 'envoy-a' });
  const b = await fleet.worker(settings, { podName: 'envoy-b' });
  const m = await fleet.worker(settings, { podName: 'envoy-a', script: 'metrics.lua' });
  await openSocket(a);
  await openSocket(a);
  await openSocket(b);
  const released = await openSocket(b);
  await b.closeHandshake(released.sid);
  await openSocket(a);
  const full = await b.request(UPGRADE); // 2 healthy pods x 2: full
  expect(full.reply?.headers[':status']).toBe('503');

  const r = await m.request([
    [':method', 'GET'],
    [':path', '/metrics'],
    [':authority', 'localhost:9901'],
  ]);
  const text = r.reply!.body ?? '';
  if (process.env.RECORD_METRICS) fs.writeFileSync(process.env.RECORD_METRICS, text);

  const snap = snapshotFrom(parseExposition(text), Date.UTC(2026, 10, 26, 6, 0, 0));
  expect(snap.pods).toEqual([
    { pod: '10.0.0.1:8080', active: 2 },
    { pod: '10.0.0.2:8080', active: 2 },
  ]);
  expect(snap.maxConnectionsPerPod).toBe(2);
  expect(snap.admitted).toBe(5);
  expect(snap.released).toBe(1);
  expect(snap.rejected.capacity).toBe(1);
  expect(snap.rateWindowUsed).toBe(5);
  expect(snap.rateLimit).toBe(8);
  expect(snap.redisUp).toBe(1);

  // Nothing of ours that the contract does not list.
  const ours = new Set(
    parseExposition(text)
      .map((f) => f.name)
      .filter((n) => n.startsWith('ws_admission_')),
  );
  for (const n of ours) expect({ n, listed: EXPORTED_METRICS.includes(n) }).toEqual({ n, listed: true });

  const screen = renderScreen(snap, { width: 80, source: 'harness' });
  expect(screen).toMatch(/10\.0\.0\.1:8080 +\[█+\] 2\/2 FULL/);
  expect(screen).toMatch(/refused: capacity +1/);
  expect(screen).toMatch(/Rate window \(60 s\) \[█+░+\] 5\/8/);
  expect(screen).toContain('Redis UP');
  expect(screen).toMatch(/Redis UP {3}errors 0 /);

  // Redis gone: the endpoint still answers, the view says so instead of showing stale numbers.
  await redis.stop(true);
  await a.request(UPGRADE); // fail open: counted per worker
  const down = await m.request([
    [':method', 'GET'],
    [':path', '/metrics'],
    [':authority', 'localhost:9901'],
  ]);
  const downText = down.reply!.body ?? '';
  if (process.env.RECORD_METRICS) fs.writeFileSync(process.env.RECORD_METRICS.replace(/\.txt$/, '-redis-down.txt'), downText);
  const downSnap = snapshotFrom(parseExposition(downText), Date.UTC(2026, 10, 26, 6, 0, 2));
  expect(downSnap.redisUp).toBe(0);
  expect(downSnap.pods).toEqual([]);
  // The failure counters reach the metrics at once (not up to ~1 s later with the next event).
  expect(downSnap.failOpen).toBe(1);
  expect(downSnap.redisErrors).toBeGreaterThanOrEqual(1);
  expect(snap.reregistered).toBe(0);
  const downScreen = renderScreen(downSnap, { width: 80, source: 'harness' });
  expect(downScreen).toContain('Redis DOWN');
  expect(downScreen).toContain('Redis-held numbers missing or stale');
  await redis.restart();
});
