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
  monitor.stdout!.on('data', (d) => {
    out += d.toString();
  });
  for (let i = 0; i < 100 && !out.startsWith('OK'); i++) await sleep(20);
});
afterAll(async () => {
  monitor.kill();
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

/** A position in the MONITOR stream after everything sent so far has shown up. */
async function markNow(): Promise<number> {
  await sleep(50);
  return out.length;
}

/** Client commands (not the ones scripts run inside Redis) since `mark`, as argument lists. */
async function clientCommands(mark: number): Promise<string[][]> {
  await sleep(50);
  return out
    .slice(mark)
    .split('\n')
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
    expect(nkeys).toBe('6');
    const view = redis.cli('ZRANGE', '{ws}:views', '0', '0'); // registered by the warm-up upgrade
    expect(rest).toEqual([
      '{ws}:rate',
      '{ws}:stats',
      '{ws}:leases',
      '{ws}:load',
      '{ws}:views',
      '{ws}:hosts',
      '60',
      '60000',
      '2',
      '3000',
      id,
      view, // no host list: its view id
      redis.cli('HGET', '{ws}:stats', 'epoch:id'), // the state epoch the worker holds
    ]);
    expect(view).toMatch(/^[0-9a-f]{16}$/);
    expect(rest[rest.length - 1]).toMatch(/^[0-9a-f]{16}$/);

    await w.response(r.sid, '101');
    await sleep(120);
    mark = await markNow();
    await w.data(r.sid, 'response');
    await w.data(r.sid, 'request'); // within the renew interval: no second renewal
    const renew = await clientCommands(mark);
    expect(renew).toHaveLength(1);
    expect(renew[0].slice(2)).toEqual(['1', '{ws}:leases', id, '10.0.0.1:8080', '3000']);

    mark = await markNow();
    // The backend's Close frame is data too: it may renew first (the interval has passed).
    await w.closeHandshake(r.sid);
    const release = (await clientCommands(mark)).filter((c) => c[1] !== renew[0][1]);
    expect(release).toHaveLength(1);
    expect(release[0].slice(2)).toEqual(['3', '{ws}:leases', '{ws}:load', '{ws}:stats', id, '10.0.0.1:8080']);
  });

  it('the host list goes to Redis once per list (register_view), not with each upgrade; a second worker with the same list sends none', async () => {
    const w = await fleet.worker({});
    let mark = await markNow();
    const first = await w.request(UPGRADE);
    await w.response(first.sid, '500');
    const calls = (await clientCommands(mark)).filter((c) => c[0] === 'EVALSHA');
    // admit (HOSTS), register_view with the list, admit again (and the release of the 500).
    expect(calls.map((c) => c[2])).toEqual(['6', '3', '6', '3']);
    const view = calls[0][calls[0].length - 2];
    expect(calls[1].slice(3)).toEqual(['{ws}:views', '{ws}:hosts', '{ws}:load', view, '10.0.0.1:8080', '10.0.0.2:8080']);
    expect(redis.cli('ZRANGE', '{ws}:hosts', '0', '-1').split('\n')).toEqual([`${view} 10.0.0.1:8080`, `${view} 10.0.0.2:8080`]);

    const w2 = await fleet.worker({});
    mark = await markNow();
    const r2 = await w2.request(UPGRADE);
    await w2.response(r2.sid, '500');
    const calls2 = (await clientCommands(mark)).filter((c) => c[0] === 'EVALSHA');
    expect(calls2.map((c) => c[2])).toEqual(['6', '3']); // admit, release: the view is known
    expect(calls2[0][calls2[0].length - 2]).toBe(view);
  });

  it('with connection_inventory the inventory is written right after an ADMITTED answer (it needs the pod), and not for a refusal', async () => {
    const w = await fleet.worker({ connection_inventory: true, max_connections_per_pod: 1 });
    const warm = await w.request(UPGRADE);
    await w.response(warm.sid, '500');
    let mark = await markNow();
    const r = await w.request(UPGRADE);
    const id = r.metadata!['ws.admission'].connection_id as string;
    const pod = r.metadata!['ws.admission'].pod as string;
    const cmds = await clientCommands(mark);
    expect(cmds.map((c) => c[0])).toEqual(['EVALSHA', 'EVALSHA']);
    expect(cmds[1].slice(2)).toEqual(['2', `{ws}:conn:${id}`, '{ws}:leases', id, pod, '3000', 'envoy-test-0', '203.0.113.9:40000']);
    await w.response(r.sid, '101');
    const r2 = await w.request(UPGRADE); // the other pod
    await w.response(r2.sid, '101');
    mark = await markNow();
    const refused = await w.request(UPGRADE);
    expect(refused.reply?.headers[':status']).toBe('503');
    expect((await clientCommands(mark)).map((c) => c[2])).toEqual(['6']); // admit only
  });
});
