/**
 * A large fleet against one Redis, part of `npm run bench`: PROXIES x WORKERS simulated
 * proxy workers (each its own Redis connection, as each Envoy worker holds one), calling
 * the real scripts exactly as the filter does, in front of PODS backend pods with
 * PER_POD open connections each (PODS x PER_POD leases). Reported:
 *   - Redis CPU spent on renewals: every connection renews once per renew interval
 *     (the default 30 s, when it carries data in that interval: the worst case), so the
 *     fleet sends PODS x PER_POD / 30 renewals per second; run for SECONDS at that rate,
 *     Redis CPU seconds per second (INFO cpu) and per renewal;
 *   - the metrics snapshot (snapshot.lua) at that size, per call and per second when every
 *     proxy is scraped every 15 s;
 *   - per-decision cost (Redis usec per admit.lua call) in this state against the same at
 *     10 pods with 1 lease each, measured in the same run;
 *   - Redis connections held (INFO clients).
 * Redis' own per-call time (INFO commandstats) is wall time inside Redis: with 200 clients
 * and the bench on the same 2 cores it includes time Redis was not scheduled, so the CPU
 * seconds per second (INFO cpu) are the figure to read for the renewals.
 *
 * Run alone: `npx tsc && node bench/fleet.js`.
 */
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import { startRedis } from '../__tests__/support/redis-server';

const PROXIES = 100;
const WORKERS = 2;
const PODS = 1000;
const PER_POD = 10;
const RENEW_INTERVAL_S = 30;
const SCRAPE_INTERVAL_S = 15;
const SECONDS = 5;
const TTL = String(360 * 1000);
const LUA = path.resolve(__dirname, '..', 'lua', 'redis');
const T = '{ws}';
const K = {
  admit: [`${T}:rate`, `${T}:stats`, `${T}:leases`, `${T}:load`, `${T}:views`, `${T}:hosts`],
  view: [`${T}:views`, `${T}:hosts`, `${T}:load`],
  lease: [`${T}:leases`, `${T}:load`, `${T}:stats`],
  snapshot: [`${T}:rate`, `${T}:stats`, `${T}:leases`, `${T}:load`],
};
const VIEW = '0123456789abcdef';
const podId = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;

async function cpuSeconds(r: Redis): Promise<number> {
  const info = await r.info('cpu');
  const get = (k: string) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)![1]);
  return get('used_cpu_user') + get('used_cpu_sys');
}
async function usecPerCall(r: Redis): Promise<number> {
  const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await r.info('commandstats'));
  return m ? Number(m[2]) / Number(m[1]) : NaN;
}
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

export async function run(): Promise<Record<string, unknown>> {
  const server = await startRedis();
  const control = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  const workers: Redis[] = [];
  try {
    await control.connect();
    const sha: Record<string, string> = {};
    for (const n of ['admit', 'register_view', 'renew', 'release', 'snapshot']) {
      sha[n] = String(await control.script('LOAD', fs.readFileSync(path.join(LUA, `${n}.lua`), 'utf8')));
    }
    const admit = (r: Redis, id: string, maxPer: number) =>
      r.evalsha(sha.admit, 6, ...K.admit, '60000000', '60000', String(maxPer), TTL, id, VIEW) as Promise<[string, string]>;

    // Per-decision cost at 10 pods, 1 lease each (the reference), in this run.
    const small = Array.from({ length: 10 }, (_, i) => podId(i));
    await control.evalsha(sha.register_view, 3, ...K.view, VIEW, ...small);
    for (let i = 0; i < 10; i++) await admit(control, `ref|000000|${i}|000000`, PER_POD);
    const decisionCost = async (label: string) => {
      await control.config('RESETSTAT');
      for (let i = 0; i < 300; i++) {
        const id = `${label}|000000|${i}|000000`;
        const [status, pod] = await admit(control, id, PER_POD);
        if (status !== 'ADMITTED') throw new Error(`fleet bench: ${label} admission ${status}`);
        await control.evalsha(sha.release, 3, ...K.lease, id, pod);
      }
      return usecPerCall(control);
    };
    const admitAt10 = await decisionCost('small');
    await control.flushall();

    // The fleet: every worker its own connection; the view registered once.
    for (let p = 0; p < PROXIES; p++) {
      for (let w = 0; w < WORKERS; w++) {
        const r = new Redis({ host: server.host, port: server.port, lazyConnect: true });
        await r.connect();
        workers.push(r);
      }
    }
    const pods = Array.from({ length: PODS }, (_, i) => podId(i));
    await control.evalsha(sha.register_view, 3, ...K.view, VIEW, ...pods);
    // PODS x PER_POD connections, admitted round robin over the workers (in parallel).
    const open: { id: string; pod: string; w: number }[] = [];
    const total = PODS * PER_POD;
    const fillStart = Date.now();
    await Promise.all(
      workers.map(async (r, w) => {
        for (let n = w; n < total; n += workers.length) {
          const id = `envoy-${Math.floor(w / WORKERS)}|${(w % WORKERS).toString(16).padStart(6, '0')}|${n}|a1b2c3`;
          const [status, pod] = await admit(r, id, PER_POD);
          if (status !== 'ADMITTED') throw new Error(`fleet bench: admission ${n} got ${status}`);
          open.push({ id, pod, w });
        }
      }),
    );
    const fillSeconds = (Date.now() - fillStart) / 1000;
    const load = await control.zrange(`${T}:load`, 0, -1, 'WITHSCORES');
    const counts = new Set(load.filter((_, i) => i % 2 === 1));
    if (counts.size !== 1 || !counts.has(String(PER_POD))) throw new Error(`fleet bench: pods not evenly full: ${[...counts].join(', ')}`);

    // Per-decision cost with the fleet full: a refusal, and an admission after a release.
    await control.config('RESETSTAT');
    for (let i = 0; i < 300; i++) {
      const [status] = await admit(control, `probe|000000|${i}|000000`, PER_POD);
      if (status !== 'FULL') throw new Error(`fleet bench: expected FULL, got ${status}`);
    }
    const refuseFull = await usecPerCall(control);
    await control.evalsha(sha.release, 3, ...K.lease, open[0].id, open[0].pod);
    const admitFull = await decisionCost('big');

    // Renewals at the fleet's rate for SECONDS.
    const rate = total / RENEW_INTERVAL_S;
    const n = Math.round(rate * SECONDS);
    const cpu0 = await cpuSeconds(control);
    await control.config('RESETSTAT');
    const start = Date.now();
    let sent = 0;
    while (sent < n) {
      const due = Math.min(n, Math.floor(((Date.now() - start) / 1000) * rate) + 1);
      const batch: Promise<unknown>[] = [];
      for (; sent < due; sent++) {
        const c = open[(sent * 7919) % open.length];
        batch.push(workers[c.w].evalsha(sha.renew, 1, `${T}:leases`, c.id, c.pod, TTL));
      }
      await Promise.all(batch);
      await new Promise((r) => setTimeout(r, 5));
    }
    const elapsed = (Date.now() - start) / 1000;
    const renewCpu = (await cpuSeconds(control)) - cpu0;
    const renewUsec = await usecPerCall(control);

    // The metrics snapshot at this size.
    await control.config('RESETSTAT');
    for (let i = 0; i < 5; i++) await control.evalsha(sha.snapshot, 4, ...K.snapshot, '60000');
    const snapshotUs = await usecPerCall(control);
    const clients = Number(/connected_clients:(\d+)/.exec(await control.info('clients'))![1]);
    const usage = async (k: string) => Number(await control.memory('USAGE', `${T}:${k}`, 'SAMPLES', '0'));
    const leaseBytes = await usage('leases');
    const podBytes = (await usage('load')) + (await usage('hosts'));

    return {
      fleet: `${PROXIES} proxies x ${WORKERS} workers, ${PODS} pods x ${PER_POD} connections = ${total} leases; filled in ${round(fillSeconds, 1)} s`,
      redisConnectionsHeld: clients,
      redisConnectionsHeldNote: `one per proxy worker (${PROXIES * WORKERS}) + this bench's control connection; the metrics listener of each proxy holds one more`,
      renewals: {
        perSecond: round(n / elapsed, 1),
        redisCpuSecondsPerSecond: round(renewCpu / elapsed, 4),
        redisUsecPerRenewal: round(renewUsec),
      },
      snapshot: {
        redisUsecPerCall: round(snapshotUs),
        redisCpuSecondsPerSecond: round((snapshotUs / 1e6) * (PROXIES / SCRAPE_INTERVAL_S), 4),
        note: `every proxy scraped every ${SCRAPE_INTERVAL_S} s: ${round(PROXIES / SCRAPE_INTERVAL_S, 1)} snapshots per second`,
      },
      decisionUsec: {
        admitAt10Pods: round(admitAt10),
        admitAtFleet: round(admitFull),
        refuseAtFleet: round(refuseFull),
        admitRatio: round(admitFull / admitAt10),
        refuseRatioToAdmitAt10: round(refuseFull / admitAt10),
      },
      // MEMORY USAGE: of the leases set per lease, of the pods' counts and the view per pod.
      redisBytesPerLease: round(leaseBytes / total, 1),
      redisBytesPerPod: round(podBytes / PODS, 1),
    };
  } finally {
    for (const w of workers) w.disconnect();
    control.disconnect();
    await server.stop();
  }
}

if (require.main === module) {
  run().then(
    (r) => console.log(JSON.stringify(r, null, 2)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
