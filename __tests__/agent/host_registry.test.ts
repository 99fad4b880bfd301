// lua/agent/host_registry.lua through the agent (lua/cli/agent.lua, run as the pod runs it):
// the proxy's healthy hosts from an Envoy admin stand-in into Redis (ws_hosts).
import { agentRig, P1, P2, P3, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const rig = agentRig();

describe("the proxy's healthy hosts (admin /clusters -> ws_hosts)", () => {
  it('registers the healthy ones on a slot of its own, then sends only what changed', async () => {
    rig.admin.hosts = new Map([
      [P1, 'healthy'],
      [P2, 'healthy'],
      [P3, '/failed_active_hc'],
    ]);
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null, 8000, 'the first registration');
      expect(Object.keys(await rig.redis.hgetall(rig.f.keys.reach)).sort()).toEqual([P1, P2]);
      const monitor = await rig.redis.duplicate().monitor();
      const calls: string[][] = [];
      monitor.on('monitor', (_t: string, args: string[]) => {
        if (args[0].toLowerCase() === 'fcall' && args[1] === 'ws_hosts') calls.push(args.slice(3 + Number(args[2])));
      });
      rig.admin.healthy(P2, P3);
      await waitFor(
        async () => (await rig.redis.hexists(rig.f.keys.reach, P3)) === 1 && (await rig.redis.hexists(rig.f.keys.reach, P1)) === 0,
      );
      monitor.disconnect();
      // One pod added and one removed, each named once: never the whole list.
      expect(calls).toEqual([
        ['add', 'envoy-a', '0', P3],
        ['remove', 'envoy-a', '0', P1],
      ]);
      expect((await rig.admitAs('envoy-a', 1)).status).toBe('ADMITTED');
    } finally {
      await a.stop();
    }
  });

  it("reads /clusters (7 MB at 10,000 hosts) only when the cluster's stats moved: a steady fleet costs one /stats a second", async () => {
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null, 8000, 'the first registration');
      const [pages, stats] = [rig.admin.clustersCalls, rig.admin.statsCalls];
      await new Promise((r) => setTimeout(r, 3000));
      expect(rig.admin.statsCalls - stats).toBeGreaterThanOrEqual(2);
      expect(rig.admin.clustersCalls).toBe(pages);
      // A host fails its health check: the next poll reads the page and reports it.
      rig.admin.hosts.set(P2, '/failed_active_hc');
      await waitFor(async () => (await rig.redis.hexists(rig.f.keys.reach, P2)) === 0, 5000, 'P2 reported unhealthy');
      // Back healthy: the healthy count moved.
      rig.admin.hosts.set(P2, 'healthy');
      await waitFor(async () => (await rig.redis.hexists(rig.f.keys.reach, P2)) === 1, 5000, 'P2 reported healthy again');
      expect(Object.keys(await rig.redis.hgetall(rig.f.keys.reach)).sort()).toEqual([P1, P2]);
    } finally {
      await a.stop();
    }
  });

  it('its slot lost (no beat for 30 s): registers the hosts again on a new one', async () => {
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    try {
      await waitFor(async () => (await rig.slotOf('envoy-a')) === '0');
      await rig.redis.zadd(rig.f.keys.beats, String(Date.now() - 60000), '0'); // as if it had not beaten for a minute
      await waitFor(() => a.output().includes('slot 0 lost'), 8000, 'the agent to notice');
      // Cleaned and freed in the same beat (two pods), so the new slot may be 0 again.
      await waitFor(async () => (await rig.slotOf('envoy-a')) !== null, 8000, 'a new registration');
      expect(Object.keys(await rig.redis.hgetall(rig.f.keys.reach)).sort()).toEqual([P1, P2]);
      expect((await rig.admitAs('envoy-a', 1)).status).toBe('ADMITTED');
    } finally {
      await a.stop();
    }
  });
});
