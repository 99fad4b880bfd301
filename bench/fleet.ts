/**
 * A large fleet against one Redis, part of `npm run bench`: PROXIES proxies of WORKERS
 * workers (each worker its own Redis connection, as each Envoy worker holds one) and one
 * agent per proxy (its own connection, lua/cli/agent.lua), calling the Functions library
 * as they do, in front of PODS backend pods with PER_POD open WebSockets each
 * (PODS x PER_POD leases), every proxy reaching every pod (its agent registered them with
 * ws_hosts). Reported:
 *   - what keeps the open sockets' leases, now the agents' work (an Envoy worker makes no
 *     Redis call on an open socket; the worker's renewal on data that this part measured
 *     before is gone): Envoy writes a lease log entry for every open stream every
 *     renewIntervalSeconds (the config's default), and each agent reads its log every
 *     50 ms and renews what it found in one ws_leases call (R operations); beats (ws_beat,
 *     every agent every second) and metrics snapshots (ws_snapshot, every agent every
 *     METRICS_SNAPSHOT_MS, instead of one per scrape). Each runs in its own phase at its
 *     fleet rate: Redis CPU seconds per second (INFO cpu) and Redis usec per call and per
 *     renewal (INFO commandstats, FCALL: one kind of call per phase);
 *   - per-decision cost (Redis usec per ws_admit) with the fleet full (a refusal) and
 *     after a release (an admission), against the same at 10 pods with 1 lease each,
 *     measured in the same run;
 *   - Redis connections held (INFO clients) and bytes per lease and per pod (MEMORY USAGE).
 * Redis' own per-call time (INFO commandstats) is wall time inside Redis: with 300 clients
 * and the bench on the same 2 cores it includes time Redis was not scheduled, so the CPU
 * seconds per second (INFO cpu) are the figure to read for the steady load.
 *
 * Run alone: `npx tsc && node bench/fleet.js`.
 */
import * as os from 'os';
import Redis from 'ioredis';
import { loadConfig } from '../config/load';
import { METRICS_SNAPSHOT_MS } from '../envoy/bootstrap';
import { startRedis } from '../tools/rig/redis-server';
import { Functions, LeaseOp } from '../__tests__/redis/support/functions';
import { commandUsec } from './measure';
import { runAlone } from './alone';

const PROXIES = 100;
const WORKERS = 2;
const PODS = 1000;
const PER_POD = 10;
const AGENT_POLL_MS = 50; // lua/cli/agent.lua POLL_S
const BEAT_MS = 1000; // lua/cli/agent.lua BEAT_MS
const BEAT_SECONDS = 5;
const TAG = 'ws';
const podId = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
const proxyName = (p: number) => `ws-envoy-6f7c9d8b5d-${p.toString(36).padStart(5, '0')}`;

async function cpuSeconds(r: Redis): Promise<number> {
  const info = await r.info('cpu');
  const get = (k: string) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)![1]);
  return get('used_cpu_user') + get('used_cpu_sys');
}
async function fcallStats(r: Redis): Promise<{ calls: number; usec: number }> {
  return commandUsec(await r.info('commandstats')).get('fcall') ?? { calls: 0, usec: 0 };
}
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Redis CPU and FCALL time over one phase of the steady load (`work` runs it). */
async function phase(
  control: Redis,
  work: () => Promise<number>,
): Promise<{ seconds: number; calls: number; cpuPerSecond: number; usecPerCall: number; items: number }> {
  await control.config('RESETSTAT');
  const cpu0 = await cpuSeconds(control);
  const start = Date.now();
  const items = await work();
  const seconds = (Date.now() - start) / 1000;
  const cpu = (await cpuSeconds(control)) - cpu0;
  const f = await fcallStats(control);
  return { seconds, calls: f.calls, cpuPerSecond: cpu / seconds, usecPerCall: f.usec / f.calls, items };
}

export async function run(): Promise<Record<string, unknown>> {
  const config = loadConfig({ env: {} });
  const renewMs = config.renewIntervalSeconds * 1000;
  const ttlMs = config.leaseTtlSeconds * 1000;
  const server = await startRedis();
  const control = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  const conns: Redis[] = [];
  const connect = async () => {
    const r = new Redis({ host: server.host, port: server.port, lazyConnect: true });
    await r.connect();
    conns.push(r);
    return r;
  };
  try {
    await control.connect();
    const ctl = await Functions.load(control, TAG);
    const admit = (f: Functions, id: string, maxPer: number) =>
      f.admitOnce({ rateLimit: 60000000, windowMs: 60000, maxPerPod: maxPer, ttlMs, id });

    // Per-decision cost at 10 pods, 1 lease each (the reference), in this run.
    await ctl.reach(
      'small',
      Array.from({ length: 10 }, (_, i) => podId(i)),
    );
    for (let i = 0; i < 10; i++) await admit(ctl, `small|000000|ref${i}|000000`, PER_POD);
    const decisionCost = async (proxy: string) => {
      await control.config('RESETSTAT');
      for (let i = 0; i < 300; i++) {
        const id = `${proxy}|000000|${i}|000000`;
        const r = await admit(ctl, id, PER_POD);
        if (r.status !== 'ADMITTED') throw new Error(`fleet bench: ${proxy} admission ${r.status}`);
        await ctl.release(id, r.pod); // (an FCALL too: the mean below is of both, halved apart below)
      }
      return fcallStats(control);
    };
    // The admission alone: the pair's time less a release's (measured on its own).
    const releaseCost = async (proxy: string) => {
      const ids: Array<[string, string]> = [];
      for (let i = 0; i < 300; i++) {
        const id = `${proxy}|000000|rel${i}|000000`;
        const r = await admit(ctl, id, 1_000_000); // (room for them all: only the releases are timed)
        if (r.status !== 'ADMITTED') throw new Error(`fleet bench: ${proxy} admission ${r.status}`);
        ids.push([id, r.pod]);
      }
      await control.config('RESETSTAT');
      for (const [id, pod] of ids) await ctl.release(id, pod);
      const f = await fcallStats(control);
      return f.usec / f.calls;
    };
    const pairAt10 = await decisionCost('small');
    const admitAt10 = pairAt10.usec / 300 - (await releaseCost('small'));
    await control.flushall();
    ctl.forget();
    await ctl.start();

    // The fleet: every worker and every agent its own connection; every agent registers the pods.
    const pods = Array.from({ length: PODS }, (_, i) => podId(i));
    const agents: Array<{ proxy: string; f: Functions; slot: number; streams: Array<{ id: string; pod: string; phaseMs: number }> }> = [];
    const workers: Array<{ proxy: string; f: Functions }> = [];
    for (let p = 0; p < PROXIES; p++) {
      const proxy = proxyName(p);
      const f = new Functions(await connect(), TAG);
      agents.push({ proxy, f, slot: await f.reach(proxy, pods), streams: [] });
      for (let w = 0; w < WORKERS; w++) workers.push({ proxy, f: new Functions(await connect(), TAG) });
    }
    // PODS x PER_POD connections, admitted round robin over the workers (in parallel).
    const total = PODS * PER_POD;
    const fillStart = Date.now();
    await Promise.all(
      workers.map(async ({ proxy, f }, w) => {
        for (let n = w; n < total; n += workers.length) {
          const id = `${proxy}|${(w % WORKERS).toString(16).padStart(6, '0')}|${n}|a1b2c3`;
          const r = await admit(f, id, PER_POD);
          if (r.status !== 'ADMITTED') throw new Error(`fleet bench: admission ${n} got ${r.status}`);
          // Envoy's timer for a stream's periodic entries starts with the stream: spread over the interval.
          agents[Math.floor(w / WORKERS)].streams.push({ id, pod: r.pod, phaseMs: (n * 7919) % renewMs });
        }
      }),
    );
    const fillSeconds = (Date.now() - fillStart) / 1000;
    const load = await control.zrange(ctl.keys.load, 0, -1, 'WITHSCORES');
    const counts = new Set(load.filter((_, i) => i % 2 === 1));
    if (counts.size !== 1 || !counts.has(String(PER_POD))) throw new Error(`fleet bench: pods not evenly full: ${[...counts].join(', ')}`);

    // Per-decision cost with the fleet full: a refusal, and an admission after a release.
    await control.config('RESETSTAT');
    for (let i = 0; i < 300; i++) {
      const r = await admit(ctl, `${agents[0].proxy}|000000|probe${i}|000000`, PER_POD);
      if (r.status !== 'FULL') throw new Error(`fleet bench: expected FULL, got ${r.status}`);
    }
    const refuseFull = (await fcallStats(control)).usec / 300;
    const first = agents[0].streams.shift()!;
    await ctl.release(first.id, first.pod);
    const pairFull = await decisionCost(agents[0].proxy);
    const admitFull = pairFull.usec / 300 - (await releaseCost(agents[0].proxy));

    // Renewals: one renew interval of lease log entries, each agent sending what it read
    // every AGENT_POLL_MS in one ws_leases call.
    const renewals = await phase(control, async () => {
      const start = Date.now();
      let last = -1;
      let ops = 0;
      while (last < renewMs) {
        await sleep(AGENT_POLL_MS);
        const now = Math.min(renewMs, Date.now() - start);
        await Promise.all(
          agents.map(async (a) => {
            const due: LeaseOp[] = a.streams.filter((s) => s.phaseMs > last && s.phaseMs <= now).map((s) => ['R', s.id, s.pod] as const);
            if (due.length === 0) return;
            const [renewed] = await a.f.leases(ttlMs, 0, due);
            if (renewed !== due.length) throw new Error(`fleet bench: ${renewed} of ${due.length} renewed`);
            ops += due.length;
          }),
        );
        last = now;
      }
      return ops;
    });

    // Beats: every agent every BEAT_MS.
    const beats = await phase(control, async () => {
      let n = 0;
      for (let i = 0; i < (BEAT_SECONDS * 1000) / BEAT_MS; i++) {
        const next = sleep(BEAT_MS);
        await Promise.all(
          agents.map(async (a) => {
            if (!(await a.f.beat(a.proxy, a.slot)).slotOk) throw new Error(`fleet bench: ${a.proxy} lost its slot`);
            n++;
          }),
        );
        await next;
      }
      return n;
    });

    // The metrics snapshot at this size.
    const snapshot = await phase(control, async () => {
      for (let i = 0; i < 5; i++) await ctl.snapshot(60000);
      return 5;
    });
    const snapshotsPerSecond = PROXIES / (METRICS_SNAPSHOT_MS / 1000);

    const clients = Number(/connected_clients:(\d+)/.exec(await control.info('clients'))![1]);
    const usage = async (k: string) => Number(await control.memory('USAGE', k, 'SAMPLES', '0'));
    const leaseBytes = await usage(ctl.keys.leases);
    const podBytes = (await usage(ctl.keys.load)) + (await usage(ctl.keys.reach));
    const agentsLoad = renewals.cpuPerSecond + beats.cpuPerSecond + (snapshot.usecPerCall / 1e6) * snapshotsPerSecond;

    const result = {
      fleet: `${PROXIES} proxies x ${WORKERS} workers + ${PROXIES} agents, ${PODS} pods x ${PER_POD} connections = ${total} leases; filled in ${round(fillSeconds, 1)} s`,
      loadAverage1m: round(os.loadavg()[0]),
      redisConnectionsHeld: clients,
      redisConnectionsHeldNote: `one per proxy worker (${PROXIES * WORKERS}) and one per agent (${PROXIES}) + this bench's control connection`,
      renewals: {
        how: `Envoy's periodic lease log entry for each open stream every ${config.renewIntervalSeconds} s (renewIntervalSeconds), read by its proxy's agent every ${AGENT_POLL_MS} ms and sent as one ws_leases call`,
        perSecond: round(renewals.items / renewals.seconds, 1),
        callsPerSecond: round(renewals.calls / renewals.seconds, 1),
        renewalsPerCall: round(renewals.items / renewals.calls),
        redisCpuSecondsPerSecond: round(renewals.cpuPerSecond, 4),
        redisUsecPerCall: round(renewals.usecPerCall),
        redisUsecPerRenewal: round((renewals.usecPerCall * renewals.calls) / renewals.items),
      },
      beats: {
        perSecond: round(beats.items / beats.seconds, 1),
        redisCpuSecondsPerSecond: round(beats.cpuPerSecond, 4),
        redisUsecPerCall: round(beats.usecPerCall),
      },
      snapshot: {
        redisUsecPerCall: round(snapshot.usecPerCall),
        redisCpuSecondsPerSecond: round((snapshot.usecPerCall / 1e6) * snapshotsPerSecond, 4),
        note: `every agent every ${METRICS_SNAPSHOT_MS / 1000} s (metrics_snapshot_ms): ${round(snapshotsPerSecond, 1)} snapshots per second, however often /metrics is scraped`,
      },
      agentsRedisCpuSecondsPerSecond: round(agentsLoad, 4),
      workersRedisCallsOnOpenSockets: 0,
      decisionUsec: {
        admitAt10Pods: round(admitAt10),
        admitAtFleet: round(admitFull),
        refuseAtFleet: round(refuseFull),
        admitRatio: round(admitFull / admitAt10),
        refuseRatioToAdmitAt10: round(refuseFull / admitAt10),
        note: 'an admission is measured as admit + release pairs less the releases alone',
      },
      // MEMORY USAGE: of the leases set per lease; of the pods' counts and slot masks per pod.
      redisBytesPerLease: round(leaseBytes / total, 1),
      redisBytesPerPod: round(podBytes / PODS, 1),
    };
    process.stdout.write(
      `fleet: ${result.fleet}; agents' steady load ${result.agentsRedisCpuSecondsPerSecond} Redis CPU s/s ` +
        `(renewals ${result.renewals.redisCpuSecondsPerSecond}, beats ${result.beats.redisCpuSecondsPerSecond}, snapshots ${result.snapshot.redisCpuSecondsPerSecond}); ` +
        `decision us: admit ${result.decisionUsec.admitAt10Pods} at 10 pods, ${result.decisionUsec.admitAtFleet} at the fleet (x${result.decisionUsec.admitRatio}), refuse ${result.decisionUsec.refuseAtFleet}; load average ${result.loadAverage1m}\n`,
    );
    return result;
  } finally {
    for (const c of conns) c.disconnect();
    control.disconnect();
    await server.stop();
  }
}

runAlone(module, run);
