// Races through the real filter at production shape: 4 proxies x 3 workers (12 luajit
// processes, each its own Lua state and Redis connection) against one Redis, while an
// auditor reads the counts as fast as it can. Never more than the limit on a pod, at any
// instant; never more upgrades than the rate limit in a window.
import Redis from 'ioredis';
import { useAdmissionRig } from '../support/admission-rig';
import { Settings, UPGRADE, Worker, admission } from './harness/worker';

const rig = useAdmissionRig();
const PROXIES = ['envoy-0', 'envoy-1', 'envoy-2', 'envoy-3'];
const WORKERS = 3;
const PODS = [1, 2, 3, 4, 5].map((i) => `10.0.1.${i}:8080`);
const LIMIT = 2;

async function fleet(settings: Partial<Settings>): Promise<Worker[]> {
  const ws: Worker[] = [];
  for (const proxy of PROXIES) {
    for (let i = 0; i < WORKERS; i++) ws.push(await rig.worker(settings, { proxy, pods: PODS }));
  }
  return ws;
}

/** Polls every pod's lease count ({ws}:leases members and {ws}:load) as fast as it can; the maximum seen. */
function auditor() {
  const users = rig.redis.users!;
  const client = new Redis({ port: rig.redis.port, host: '127.0.0.1', username: users.admin.name, password: users.admin.password });
  let max = 0;
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const [[, members], [, load]] = (await client
        .multi()
        .zrange(rig.f.keys.leases, 0, -1)
        .zrange(rig.f.keys.load, 0, -1, 'WITHSCORES')
        .exec()) as [unknown, string[]][];
      const perPod = new Map<string, number>();
      for (const m of members) {
        const pod = m.slice(m.indexOf(' ') + 1);
        perPod.set(pod, (perPod.get(pod) ?? 0) + 1);
      }
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

describe('several proxies and workers at once', () => {
  it(`GIVEN ${PROXIES.length} x ${WORKERS} workers WHEN 240 upgrades come at once THEN exactly ${PODS.length * LIMIT} are admitted, never ${LIMIT + 1} on a pod`, async () => {
    const ws = await fleet({ max_connections_per_pod: LIMIT });
    const audit = auditor();
    const results = await Promise.all(ws.flatMap((w) => Array.from({ length: 20 }, () => w.request(UPGRADE))));
    const { max, samples } = await audit.stop();
    const admitted = results.filter((r) => r.override);
    expect(admitted).toHaveLength(PODS.length * LIMIT);
    const perPod = new Map<string, number>();
    for (const r of admitted) perPod.set(r.override!.host, (perPod.get(r.override!.host) ?? 0) + 1);
    expect(Object.fromEntries(perPod)).toEqual(Object.fromEntries(PODS.map((p) => [p, LIMIT])));
    for (const r of results.filter((x) => !x.override)) expect(r.reply?.headers['x-ws-admission']).toBe('capacity');
    expect(samples).toBeGreaterThanOrEqual(1);
    expect(max).toBeLessThanOrEqual(LIMIT);
    expect(await rig.stats()).toEqual({ admitted: 10, rejected_capacity: 230 });
  });

  it('GIVEN a global rate limit WHEN every worker tries at once THEN the fleet admits exactly the limit in the window', async () => {
    const ws = await fleet({ rate_limit: 15, rate_window_ms: 60000, max_connections_per_pod: 100 });
    const results = await Promise.all(ws.flatMap((w) => Array.from({ length: 5 }, () => w.request(UPGRADE))));
    expect(results.filter((r) => r.override)).toHaveLength(15);
    expect(results.filter((r) => r.reply?.headers[':status'] === '429')).toHaveLength(45);
    expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(15);
  });

  it('GIVEN churn for 3 s (101s released by the agent, backends refusing, Envoy failing to connect) THEN never over the limit, and it ends at zero', async () => {
    const ws = await fleet({ max_connections_per_pod: LIMIT, penalty_ms: 0 });
    const audit = auditor();
    let admitted = 0;
    let failed = 0;
    const deadline = Date.now() + 3000;
    await Promise.all(
      ws.map(async (w, n) => {
        for (let i = 0; Date.now() < deadline; i++) {
          const r = await w.request(UPGRADE);
          if (!r.override) {
            await new Promise((res) => setTimeout(res, 5));
            continue;
          }
          admitted += 1;
          const md = admission(r);
          if ((i + n) % 5 === 3) {
            await w.response(r.sid, '403'); // the backend refuses: the filter releases (X)
          } else if ((i + n) % 5 === 4) {
            failed += 1;
            await w.localReply(r.sid, 'UF'); // never reached the backend: F
          } else {
            await w.response(r.sid, '101');
            await new Promise((res) => setTimeout(res, Math.floor(Math.random() * 20)));
            await w.reset(r.sid);
            await rig.f.leases(30000, 0, [['X', md.connection_id!, md.pod!]]); // the agent, from the lease log's end entry
          }
        }
      }),
    );
    const { max } = await audit.stop();
    expect(max).toBeLessThanOrEqual(LIMIT);
    expect(admitted).toBeGreaterThan(50);
    expect(await rig.admin.zcard(rig.f.keys.leases)).toBe(0);
    for (const pod of PODS) expect(await rig.admin.zscore(rig.f.keys.load, pod)).toBe('0');
    const st = await rig.stats();
    expect(st.admitted).toBe(admitted);
    expect(st.released).toBe(admitted);
    expect(st.failed_upstream ?? 0).toBe(failed);
  });
});
