// lua/agent/fleet.lua through the agent: the beat, and the recovery of a Redis that lost
// its state (ws_recover), with several agents at once.
import * as fs from 'fs';
import { loadLibrary } from '../redis/support/functions';
import { agentRig, entry, leaseLogPath, P1, P2, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const rig = agentRig();

describe('a Redis that lost its state (ws_recover)', () => {
  it('every agent puts back its open streams and hosts before anything is admitted; ended streams stay gone', async () => {
    const agents = ['envoy-a', 'envoy-b', 'envoy-c'].map((p) => startAgent(rig.luaDir, p, rig.admin.address));
    try {
      for (const p of ['envoy-a', 'envoy-b', 'envoy-c']) await waitFor(async () => (await rig.slotOf(p)) !== null, 8000, `${p} registered`);
      // Each proxy has two open streams and one that ended (its end entry seen).
      for (const [i, a] of agents.entries()) {
        const p = ['envoy-a', 'envoy-b', 'envoy-c'][i];
        const log = leaseLogPath(a.stateDir);
        for (const n of [1, 2, 3]) fs.appendFileSync(log, entry('periodic', `${p}|00aa00|${n}|0000${n}`, n === 2 ? P2 : P1));
        fs.appendFileSync(log, entry('end', `${p}|00aa00|3|00003`, P1));
      }
      await waitFor(async () => (await rig.redis.zcard(rig.f.keys.leases)) === 6, 8000, 'six leases');
      // Let every agent learn who is alive (they ask every 5th beat).
      await new Promise((res) => setTimeout(res, 5500));
      // The restart: Redis comes back empty, its administrator loads the library again.
      await rig.server.restart();
      await rig.redis.connect().catch(() => undefined);
      await waitFor(async () => (await rig.redis.ping().catch(() => '')) === 'PONG', 5000, 'Redis back');
      await loadLibrary(rig.redis);
      expect((await rig.admitAs('envoy-a', 9)).status).toBe('RECOVERING');
      const ms = await waitFor(async () => (await rig.admitAs('envoy-a', 10)).status === 'ADMITTED', 8000, 'admissions to resume');
      expect(ms).toBeLessThan(5000);
      const counts = await rig.f.counts();
      // Two open streams per proxy came back, plus the one admitted just now; the ended ones did not.
      expect(counts.byProxy).toEqual({ 'envoy-a': 3, 'envoy-b': 2, 'envoy-c': 2 });
      expect((await rig.redis.zrange(rig.f.keys.leases, 0, -1)).some((m) => m.includes('|3|'))).toBe(false);
      await waitFor(async () => (await rig.redis.exists(rig.f.keys.recovery)) === 0, 3000, 'the next beat to clear the recovery');
      for (const a of agents) expect(a.output()).toMatch(/put back 2 open stream\(s\)/);
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
    }
  });

  it('a proxy the first agent knew alive but that never comes back holds admissions up for 10 s at most', async () => {
    await rig.f.reach('envoy-gone', [P1]); // known alive: it beat just now
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null);
      await new Promise((res) => setTimeout(res, 5500)); // a beat with the live list
      await rig.redis.flushall('SYNC');
      await loadLibrary(rig.redis);
      const t0 = Date.now();
      await waitFor(async () => (await rig.redis.hget(rig.f.keys.stats, 'epoch')) !== null, 5000, 'the recovery to begin');
      expect((await rig.admitAs('envoy-a', 1)).status).toBe('RECOVERING');
      await waitFor(async () => (await rig.admitAs('envoy-a', 2)).status === 'ADMITTED', 15000, 'the deadline');
      expect(Date.now() - t0).toBeGreaterThan(8000);
    } finally {
      await a.stop();
    }
  });
});
