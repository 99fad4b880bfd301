// lua/agent/streams.lua through the agent: lease log entries into ws_leases operations
// (renew, release), against a real redis-server with the ws_admission library.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { STATE_FILES } from '../../envoy/bootstrap';
import { lease } from '../redis/support/functions';
import { agentRig, entry, leaseLogPath, P1, P2, runOnce, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const rig = agentRig();

describe('leases from the lease log (ws_leases)', () => {
  it('renews on periodic entries, puts back a lost lease, releases at the end entry; the 101 of an admitted stream costs nothing', async () => {
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null);
      const r = await rig.admitAs('envoy-a', 1);
      const id = 'envoy-a|00aa00|1|00001';
      const first = await rig.expiry(id, r.pod);
      const log = leaseLogPath(a.stateDir);
      fs.appendFileSync(log, entry('open', id, r.pod));
      await new Promise((res) => setTimeout(res, 300));
      expect(await rig.expiry(id, r.pod)).toBe(first);
      fs.appendFileSync(log, entry('periodic', id, r.pod));
      await waitFor(async () => (await rig.expiry(id, r.pod)) > first, 5000, 'the renewal');
      await rig.redis.zrem(rig.f.keys.leases, lease(id, r.pod)); // lost, e.g. with Redis's state
      await rig.redis.zincrby(rig.f.keys.load, -1, r.pod);
      await rig.redis.hincrby(rig.f.keys.stats, 'leases:envoy-a', -1);
      fs.appendFileSync(log, entry('periodic', id, r.pod));
      await waitFor(async () => (await rig.expiry(id, r.pod)) > 0, 5000, 'the lease put back');
      expect(await rig.stat('reregistered')).toBe(1);
      fs.appendFileSync(log, entry('end', id, r.pod));
      await waitFor(async () => (await rig.redis.zcard(rig.f.keys.leases)) === 0, 5000, 'the release');
      expect(await rig.stat('released')).toBe(1);
      expect(await rig.redis.zscore(rig.f.keys.load, r.pod)).toBe('0');
    } finally {
      await a.stop();
    }
  });

  it('an upgrade that never reached its backend (Envoy answered 503 UF/UH itself): its window entry back, its pod penalised', async () => {
    await rig.f.reach('envoy-a', [P1]);
    const r = await rig.admitAs('envoy-a', 1);
    const r2 = await rig.admitAs('envoy-a', 2);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      entry('end', 'envoy-a|00aa00|1|00001', r.pod, { status: 503, flags: 'UF', upstream: r.pod }) +
        entry('end', 'envoy-a|00aa00|2|00002', r2.pod, { status: 403, flags: '-', upstream: r2.pod }),
    );
    expect((await runOnce(rig.luaDir, 'envoy-a', rig.admin.address, dir)).code).toBe(0);
    expect(await rig.redis.zrange(rig.f.keys.rate, 0, -1)).toEqual(['envoy-a|00aa00|2|00002']); // the 403 reached a backend
    expect(await rig.redis.zrange(rig.f.keys.down, 0, -1)).toEqual([P1]);
    expect(await rig.stat('failed_upstream')).toBe(1);
    expect(await rig.redis.zcard(rig.f.keys.leases)).toBe(0);
  });

  it('a stream routed while Redis was unavailable (registered 0) gets its lease on the host Envoy chose, at its 101', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(leaseLogPath(dir), entry('open', 'envoy-a|00aa00|7|00007', '-', { registered: false, upstream: P2 }));
    expect((await runOnce(rig.luaDir, 'envoy-a', rig.admin.address, dir)).code).toBe(0);
    expect(await rig.redis.zrange(rig.f.keys.leases, 0, -1)).toEqual([lease('envoy-a|00aa00|7|00007', P2)]);
    expect(await rig.redis.zscore(rig.f.keys.load, P2)).toBe('1');
  });

  it('at start it acts on what Envoy wrote meanwhile: ended streams released (never put back), open ones renewed, stale ones left to expire', async () => {
    const now = Date.now();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      [
        entry('periodic', 'envoy-a|00aa00|1|00001', P1, { atMs: now - 1500 }),
        entry('periodic', 'envoy-a|00aa00|2|00002', P2, { atMs: now - 1500 }),
        entry('end', 'envoy-a|00aa00|1|00001', P1, { atMs: now - 1000 }),
        // No entry for 10 s (> 2 renew intervals + 5 s): it ended with its end entry lost.
        entry('periodic', 'envoy-a|00aa00|3|00003', P1, { atMs: now - 10000 }),
      ].join(''),
    );
    await rig.f.renew('envoy-a|00aa00|1|00001', P1, 30000); // its lease, still held
    const monitor = await rig.redis.duplicate().monitor();
    const ops: string[] = [];
    monitor.on('monitor', (_t: string, args: string[]) => {
      if (args[0].toLowerCase() === 'fcall' && args[1] === 'ws_leases') ops.push(...args.slice(3 + Number(args[2]) + 2));
    });
    expect((await runOnce(rig.luaDir, 'envoy-a', rig.admin.address, dir)).code).toBe(0);
    monitor.disconnect();
    expect(ops).toEqual(['X', 'envoy-a|00aa00|1|00001', P1, 'R', 'envoy-a|00aa00|2|00002', P2]);
    expect(await rig.redis.zrange(rig.f.keys.leases, 0, -1)).toEqual([lease('envoy-a|00aa00|2|00002', P2)]);
  });

  it('after the drain marker, periodic entries renew nothing (the drain gave the slots back)', async () => {
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null);
      fs.writeFileSync(path.join(a.stateDir, STATE_FILES.draining), `${Date.now()}\nenvoy-a\n`);
      await new Promise((res) => setTimeout(res, 200));
      fs.appendFileSync(leaseLogPath(a.stateDir), entry('periodic', 'envoy-a|00aa00|5|00005', P1));
      await new Promise((res) => setTimeout(res, 1500));
      expect(await rig.redis.zcard(rig.f.keys.leases)).toBe(0);
    } finally {
      await a.stop();
    }
  });

  it('hostile lines never reach Redis: no key is made of them, they are counted unreadable', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      [
        entry('periodic', 'evil|00|1|00', '{ws}:rate'),
        entry('periodic', '../../etc|1|1|1', P1),
        entry('periodic', 'Bad Id', P1),
        `DownstreamPeriodic envoy-a|00aa00|1|00001 ${P1} 1 101 - ${P1} 1 1 extra\n`,
        `${'x'.repeat(600)}\n`,
        'not a lease line\n',
      ].join(''),
    );
    const before = (await rig.redis.keys('*')).sort();
    const r = await runOnce(rig.luaDir, 'envoy-a', rig.admin.address, dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain('5 unreadable line(s)');
    expect(await rig.redis.zcard(rig.f.keys.leases)).toBe(0);
    expect((await rig.redis.keys('*')).sort().filter((k) => !before.includes(k) && !k.startsWith('{ws}:'))).toEqual([]);
  });
});
