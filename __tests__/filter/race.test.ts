// Races through the real filter: 10 luajit processes (10 proxies, one worker each)
// hitting one Redis at once, 5 pods, 2 connections per pod.
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, Worker, sleep, statsHash } from './harness/worker';

const PROXIES = 10;
const PODS: Array<[string, string]> = [1, 2, 3, 4, 5].map((i) => [`10.0.1.${i}:8080`, 'healthy']);
const LIMIT = 2;

let redis: RedisServer;
let fleet: Fleet;
let workers: Worker[];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(async () => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
  workers = await Promise.all(
    Array.from({ length: PROXIES }, (_, i) =>
      fleet.worker(
        { max_connections_per_pod: LIMIT, lease_ttl_ms: 30000, renew_interval_ms: 1000 },
        { podName: `envoy-${i}`, hosts: PODS },
      ),
    ),
  );
});
afterEach(async () => {
  await fleet.closeAll();
});

/** Polls every pod's lease count ({ws}:leases members, and {ws}:load's count) as fast as it can; remembers the maximum seen. */
function auditor() {
  const client = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: false });
  let max = 0;
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const [[, members], [, load]] = (await client
        .multi()
        .zrange('{ws}:leases', 0, -1)
        .zrange('{ws}:load', 0, -1, 'WITHSCORES')
        .exec()) as [unknown, string[]][];
      const perPod = new Map<string, number>();
      for (const m of members) perPod.set(m.slice(m.indexOf(' ') + 1), (perPod.get(m.slice(m.indexOf(' ') + 1)) ?? 0) + 1);
      for (const n of perPod.values()) max = Math.max(max, n);
      for (let i = 1; i < load.length; i += 2) max = Math.max(max, Number(load[i]));
      samples += 1;
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      client.disconnect();
      return { max, samples };
    },
  };
}

describe('multi-proxy race through the filter', () => {
  it('hundreds of concurrent upgrades: exactly 10 admitted, never more than 2 on a pod', async () => {
    const audit = auditor();
    const results = await Promise.all(workers.flatMap((w) => Array.from({ length: 30 }, () => w.request(UPGRADE))));
    const { max, samples } = await audit.stop();
    const admitted = results.filter((r) => r.override);
    expect(results).toHaveLength(300);
    expect(admitted).toHaveLength(PODS.length * LIMIT);
    const perPod = new Map<string, number>();
    for (const r of admitted) perPod.set(r.override!.host, (perPod.get(r.override!.host) ?? 0) + 1);
    for (const [pod] of PODS) expect(perPod.get(pod)).toBe(LIMIT);
    for (const r of results.filter((x) => !x.override)) expect(r.reply?.headers[':status']).toBe('503');
    expect(max).toBeLessThanOrEqual(LIMIT);
    // No lease expires or is released in this phase, so the final counts bound every instant too.
    for (const [pod] of PODS) expect(redis.cli('ZSCORE', '{ws}:load', pod)).toBe(String(LIMIT));
    expect(samples).toBeGreaterThanOrEqual(1);
    expect(statsHash(redis.cli)).toMatchObject({ admitted: 10, rejected_capacity: 290 });
  });

  it('with churn (acquire, hold, release) stays within the limits and ends with zero leases', async () => {
    const audit = auditor();
    const open = new Map<string, number>(); // the test's own view: admitted and not yet being released
    let worst = 0;
    let admittedTotal = 0;
    const deadline = Date.now() + 3000;
    await Promise.all(
      workers.map(async (w) => {
        while (Date.now() < deadline) {
          const r = await w.request(UPGRADE);
          if (!r.override) {
            await sleep(5);
            continue;
          }
          admittedTotal += 1;
          const pod = r.override.host;
          open.set(pod, (open.get(pod) ?? 0) + 1);
          worst = Math.max(worst, open.get(pod)!);
          await w.response(r.sid, '101');
          await w.data(r.sid, 'response');
          await sleep(Math.floor(Math.random() * 20));
          open.set(pod, open.get(pod)! - 1); // the slot may stay taken in Redis until release returns
          await w.closeHandshake(r.sid);
        }
      }),
    );
    const { max } = await audit.stop();
    expect(worst).toBeLessThanOrEqual(LIMIT);
    expect(max).toBeLessThanOrEqual(LIMIT);
    expect(admittedTotal).toBeGreaterThan(50);
    expect(redis.cli('ZCARD', '{ws}:leases')).toBe('0');
    for (const [pod] of PODS) expect(redis.cli('ZSCORE', '{ws}:load', pod)).toBe('0');
    const st = statsHash(redis.cli);
    expect(st.admitted).toBe(admittedTotal);
    expect(st.released).toBe(admittedTotal);
  });
});
