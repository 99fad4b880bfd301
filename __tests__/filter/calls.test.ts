// Pins the exact Redis commands the filter sends per event (captured with MONITOR), so a
// change of the Redis contract (lua/redis/README.md, DESIGN.md) shows up here.
import { spawn, ChildProcess } from 'child_process';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, sleep } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;
let monitor: ChildProcess;
let out = '';

beforeAll(async () => {
  redis = await startRedis();
  monitor = spawn('redis-cli', ['-p', String(redis.port), 'MONITOR']);
  monitor.stdout!.on('data', (d) => { out += d.toString(); });
  for (let i = 0; i < 100 && !out.startsWith('OK'); i++) await sleep(20);
});
afterAll(async () => { monitor.kill(); await redis.stop(); });
beforeEach(() => { redis.cli('FLUSHALL'); fleet = new Fleet(redis.port); });
afterEach(async () => { await fleet.closeAll(); });

/** A position in the MONITOR stream after everything sent so far has shown up. */
async function markNow(): Promise<number> {
  await sleep(50);
  return out.length;
}

/** Client commands (not the ones scripts run inside Redis) since `mark`, as argument lists. */
async function clientCommands(mark: number): Promise<string[][]> {
  await sleep(50);
  return out.slice(mark).split('\n')
    .filter((l) => /^\d+\.\d+ \[\d+ 127\.0\.0\.1:\d+\]/.test(l))
    .map((l) => [...l.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]))
    .filter((a) => a[0] !== 'SCRIPT' && a[0] !== 'FLUSHALL');
}

describe('the Redis calls of one connection', () => {
  it('admission = one EVALSHA admit; renewal = one EVALSHA renew; release = one EVALSHA release', async () => {
    const w = await fleet.worker({ rate_limit: 60, rate_window_ms: 60000, lease_ttl_ms: 3000, renew_interval_ms: 100 });
    // Load the scripts once (SCRIPT LOAD happens on first use per worker).
    const warm = await w.request(UPGRADE);
    await w.response(warm.sid, '500');

    let mark = await markNow();
    const r = await w.request(UPGRADE);
    const id = r.metadata!['ws.admission'].connection_id as string;
    const admit = await clientCommands(mark);
    expect(admit).toHaveLength(1);
    const [cmd, sha, nkeys, ...rest] = admit[0];
    expect(cmd).toBe('EVALSHA');
    expect(sha).toMatch(/^[0-9a-f]{40}$/);
    expect(nkeys).toBe('5');
    expect(rest).toEqual([
      '{ws}:rate', '{ws}:stats', '{ws}:pods', '{ws}:pod:10.0.0.1:8080', '{ws}:pod:10.0.0.2:8080',
      '60', '60000', '2', '3000', id, '10.0.0.1:8080', '10.0.0.2:8080',
      redis.cli('HGET', '{ws}:stats', 'epoch:id'), // the state epoch the worker holds
    ]);
    expect(rest[rest.length - 1]).toMatch(/^[0-9a-f]{16}$/);

    await w.response(r.sid, '101');
    await sleep(120);
    mark = await markNow();
    await w.data(r.sid, 'response');
    await w.data(r.sid, 'request'); // within the renew interval: no second renewal
    const renew = await clientCommands(mark);
    expect(renew).toHaveLength(1);
    expect(renew[0].slice(2)).toEqual(['1', '{ws}:pod:10.0.0.1:8080', id, '3000']);

    mark = await markNow();
    // The backend's Close frame is data too: it may renew first (the interval has passed).
    await w.closeHandshake(r.sid);
    const release = (await clientCommands(mark)).filter((c) => c[1] !== renew[0][1]);
    expect(release).toHaveLength(1);
    expect(release[0].slice(2)).toEqual(['3', '{ws}:pod:10.0.0.1:8080', '{ws}:stats', '{ws}:pods', id, '10.0.0.1:8080']);
  });

  it('with connection_inventory the inventory write rides in the same round trip as admit', async () => {
    const w = await fleet.worker({ connection_inventory: true });
    const warm = await w.request(UPGRADE);
    await w.response(warm.sid, '500');
    const mark = await markNow();
    const r = await w.request(UPGRADE);
    const id = r.metadata!['ws.admission'].connection_id as string;
    const cmds = await clientCommands(mark);
    expect(cmds.map((c) => c[0])).toEqual(['EVALSHA', 'EVALSHA']);
    expect(cmds[1].slice(2)).toEqual([
      '3', `{ws}:conn:${id}`, '{ws}:pod:10.0.0.1:8080', '{ws}:pod:10.0.0.2:8080',
      id, '3000', 'envoy-test-0', '203.0.113.9:40000', '10.0.0.1:8080', '10.0.0.2:8080',
    ]);
    // Same client connection, sent back to back (one write): same client address in MONITOR.
    const clients = out.slice(mark).split('\n').filter((l) => l.includes('"EVALSHA"'))
      .map((l) => l.match(/\[\d+ (127\.0\.0\.1:\d+)\]/)?.[1]);
    expect(new Set(clients).size).toBe(1);
  });
});
