/**
 * Memory through real Envoy: Envoy's resident memory per open WebSocket, the agent's
 * (it holds the proxy's table of open streams from the lease log, which the filter's
 * workers kept themselves before the agent), and Redis's bytes per lease. The local rig,
 * one proxy with one worker, 10 backends with room for all; N WebSockets opened in steps,
 * each step measured after the connections settle: VmRSS (/proc/<pid>/status) of Envoy
 * and of the agent, and Redis's `used_memory` (INFO memory). Reported as the slope
 * between the first loaded step and the last (bytes per connection), so the fixed cost of
 * an idle Envoy, agent and Redis (and Redis's Functions library) is left out. Every lease
 * is a member of one sorted set (`leases`, a skiplist past 128 members) and a count in
 * `load` and `stats`.
 */
import WebSocket from 'ws';
import { loadConfig } from '../config/load';
import { LocalRig } from '../tools/rig/rig';
import { rssBytes, ONE_CLIENT } from './measure';
import { openMany } from './ws';

const STEPS = [0, 250, 500, 1000];

export async function run(): Promise<Record<string, unknown>> {
  const rig = await LocalRig.start({
    config: loadConfig({
      env: {},
      overrides: { ...ONE_CLIENT, maxConnectionsPerPod: 1000, rateLimitPerMinute: 0, envoyMaxConnections: 5000 },
    }),
    basePort: 24200,
    proxies: 1,
    backends: 10,
    backendsIn: 'inline',
    concurrency: 1,
  });
  const sockets: WebSocket[] = [];
  try {
    const pid = rig.proxies[0].envoy!.pid!;
    const agentPid = rig.proxies[0].agent!.pid!;
    const redisUsed = async () => Number(/used_memory:(\d+)/.exec(await rig.redisCli('INFO', 'memory'))?.[1]);
    const points: Array<{ open: number; envoyRss: number; agentRss: number; redisUsed: number; leases: number }> = [];
    for (const n of STEPS) {
      await openMany(rig.proxies[0].publicUrl, n - sockets.length, sockets);
      await new Promise((r) => setTimeout(r, 1500));
      const leases = Object.values(await rig.leases()).reduce((a, b) => a + b, 0);
      points.push({ open: n, envoyRss: rssBytes(pid), agentRss: rssBytes(agentPid), redisUsed: await redisUsed(), leases });
    }
    // From the first loaded step: the step from 0 also warms Envoy's pools and the
    // agent's tables, which are not per connection.
    const first = points[1];
    const last = points[points.length - 1];
    const per = (a: number, b: number) => Math.round((b - a) / (last.open - first.open));
    return {
      setup: `1 proxy x 1 worker, 10 backends, ${STEPS.join('/')} open WebSockets`,
      points,
      envoyRssBytesPerWebSocket: per(first.envoyRss, last.envoyRss),
      agentRssBytesPerWebSocket: per(first.agentRss, last.agentRss),
      redisBytesPerLease: per(first.redisUsed, last.redisUsed),
      leasesAtEnd: last.leases,
    };
  } finally {
    for (const s of sockets) s.terminate();
    await rig.stop();
  }
}
