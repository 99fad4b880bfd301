// lua/envoy/filter.lua, the admitted path: one ws_admit per upgrade, the strict pin, the
// dynamic metadata the lease log reads, and what envoy_on_response does with the answer
// (101: nothing; a backend's refusal: ws_leases X; Envoy's own reply: F). Run unchanged
// under the LuaJIT harness against a real Redis with the production ACL and the library
// (__tests__/support/admission-rig.ts).
import { PODS, PROXY, useAdmissionRig } from '../support/admission-rig';
import { leaseLogged } from './harness/router';
import { HeaderList, PLAIN, UPGRADE, admission, openSocket } from './harness/worker';

const rig = useAdmissionRig();
const [P1, P2] = PODS;

describe('an admitted upgrade', () => {
  it('GIVEN two pods WHEN four upgrades come THEN each goes to the least-loaded pod, pinned strictly, with its lease in Redis', async () => {
    const w = await rig.worker({ max_connections_per_pod: 2 });
    const pods: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await w.request(UPGRADE);
      expect({ state: r.state, passed: r.passed, strict: r.override?.strict }).toEqual({ state: 'done', passed: true, strict: true });
      pods.push(r.override!.host);
      await w.response(r.sid, '101');
    }
    // Least loaded first, ties to the lowest pod id.
    expect(pods).toEqual([P1, P2, P1, P2]);
    expect(await rig.perPod()).toEqual({ [P1]: 2, [P2]: 2 });
    expect(await rig.stats()).toEqual({ admitted: 4 });
  });

  it('THEN its dynamic metadata names the lease for the lease log: connection id, pod, kind, registered, held', async () => {
    const w = await rig.worker();
    const r = await w.request(UPGRADE);
    const md = admission(r);
    expect(md).toEqual({ connection_id: expect.any(String), pod: r.override!.host, kind: 'h1', registered: '1', lease: 'held' });
    expect(leaseLogged(r.metadata)).toBe(true); // the stack's lease log (envoy/bootstrap.ts) selects it
    expect(md.connection_id).toMatch(new RegExp(`^${PROXY}\\|[0-9a-f]{6}\\|1\\|[0-9a-f]{6}$`));
    expect(await rig.leases()).toEqual([{ id: md.connection_id, pod: md.pod }]);
  });

  it('WHEN the backend answers 101 THEN the filter does nothing more: the lease stays held, the metadata unchanged', async () => {
    const w = await rig.worker();
    const s = await openSocket(w);
    const after = await w.data(s.sid, 'response');
    expect(admission(after)).toEqual(admission(s.req));
    await w.closeHandshake(s.sid);
    // The stream ended by a reset, as Envoy ends every upgraded stream: the agent releases
    // it from the lease log (not the filter).
    expect(await rig.leases()).toHaveLength(1);
    expect(await rig.stats()).toEqual({ admitted: 1 });
  });

  it('connection ids stay unique across workers of one proxy started at the same instant', async () => {
    // Same POD_NAME, started together: the worker token comes from /dev/urandom, not the clock.
    const ws = await Promise.all([0, 1, 2, 3, 4, 5].map(() => rig.worker({ max_connections_per_pod: 100 })));
    const ids: string[] = [];
    for (const w of ws) {
      for (let i = 0; i < 3; i++) ids.push(admission(await w.request(UPGRADE)).connection_id!);
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids.map((id) => id.split('|')[1])).size).toBe(ws.length); // one token per worker
  });

  it('GIVEN an HTTP/2 extended CONNECT (RFC 8441) THEN it is admitted like an HTTP/1.1 upgrade (the codec rewrote it)', async () => {
    const w = await rig.worker();
    const h2: HeaderList = [
      [':method', 'CONNECT'],
      [':protocol', 'websocket'],
      [':path', '/ws'],
      [':authority', 'example.test'],
      [':scheme', 'https'],
    ];
    const r = await w.request(h2);
    expect(r.override).toEqual({ host: P1, strict: true });
    expect(r.headers).toContainEqual([':method', 'GET']);
    expect(admission(r).kind).toBe('h1');
    // The downstream's 200 is made from the 101 the filters see.
    await w.response(r.sid, '101');
    expect(await rig.perPod()).toEqual({ [P1]: 1 });
  });
});

describe('an admitted upgrade the backend does not take (envoy_on_response: ws_leases X)', () => {
  it.each(['403', '500', '200'])(
    "WHEN the backend answers %s THEN the lease is released at once, the attempt's rate budget stays spent, the pod is not passed over",
    async (status) => {
      const w = await rig.worker({ rate_limit: 10, rate_window_ms: 60000 });
      const r = await w.request(UPGRADE);
      const resp = await w.response(r.sid, status);
      expect(admission(resp).lease).toBe('released'); // no lease log line will release it again
      expect(leaseLogged(resp.metadata)).toBe(false);
      expect(await rig.leases()).toEqual([]);
      expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(1);
      expect(await rig.admin.zcard(rig.f.keys.down)).toBe(0);
      expect(await rig.stats()).toEqual({ admitted: 1, released: 1 });
      // The pod it was pinned to is the first choice again.
      expect((await w.request(UPGRADE)).override?.host).toBe(r.override!.host);
    },
  );

  it('WHEN Redis is down at that moment THEN the lease stays "held", so the end entry of the lease log releases it', async () => {
    const w = await rig.worker();
    const r = await w.request(UPGRADE);
    await rig.stopRedis();
    const resp = await w.response(r.sid, '403');
    expect(admission(resp).lease).toBe('held');
    expect(leaseLogged(resp.metadata)).toBe(true);
    expect(resp.state).toBe('done');
  });
});

describe('an admitted upgrade Envoy answers itself (envoy_on_response: ws_leases F)', () => {
  it.each(['UH', 'UF'] as const)(
    'WHEN the router replies %s (pinned host gone / refused) THEN the lease and the window entry go back and the pod is passed over for penalty_ms by every proxy',
    async (flag) => {
      const penalty = 1500;
      const settings = { rate_limit: 10, rate_window_ms: 60000, penalty_ms: penalty };
      const w = await rig.worker(settings);
      const other = await rig.worker(settings, { proxy: 'envoy-other' });
      const r = await w.request(UPGRADE);
      expect(r.override?.host).toBe(P1);
      const before = await rig.f.nowMs();
      const resp = await w.localReply(r.sid, flag);
      expect(admission(resp).lease).toBe('released');
      expect(resp.headers.map(([k]) => k)).not.toContain('x-ws-local-reply'); // the client never sees it
      expect(await rig.leases()).toEqual([]);
      expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(0); // a failed upgrade spends no budget
      const until = Number(await rig.admin.zscore(rig.f.keys.down, P1));
      expect(until).toBeGreaterThanOrEqual(before + penalty);
      expect(await rig.stats()).toEqual({ admitted: 1, released: 1, failed_upstream: 1 });
      // Every proxy passes over P1 although it is the least loaded (and first by id) ...
      expect((await w.request(UPGRADE)).override?.host).toBe(P2);
      expect((await other.request(UPGRADE)).override?.host).toBe(P2);
      // ... until its penalty ends (Redis time).
      while ((await rig.f.nowMs()) <= until) await new Promise((res) => setTimeout(res, 50));
      expect((await w.request(UPGRADE)).override?.host).toBe(P1);
    },
  );

  it('WHEN the penalised pod is the only one THEN the upgrade is refused as full, not routed to it', async () => {
    const w = await rig.worker({ penalty_ms: 60000 }, { pods: [P1] });
    const r = await w.request(UPGRADE);
    await w.localReply(r.sid, 'UH');
    const again = await w.request(UPGRADE);
    expect(again.reply?.headers[':status']).toBe('503');
    expect(again.reply?.headers['x-ws-admission']).toBe('capacity');
  });

  it('GIVEN a refusal the filter made itself THEN its envoy_on_response calls nothing (no metadata of an admission)', async () => {
    const w = await rig.worker({ max_connections_per_pod: 1 }, { pods: [P1] });
    await openSocket(w);
    const calls = await rig.calls('fcall');
    const refused = await w.request(UPGRADE);
    expect(refused.reply?.headers['x-ws-admission']).toBe('capacity');
    expect(admission(refused)).toEqual({});
    expect(await rig.calls('fcall')).toBe(calls + 1); // the ws_admit that refused, nothing after
  });
});

describe('plain requests', () => {
  it('pass through untouched, without a Redis call, unless limit_all_requests', async () => {
    const w = await rig.worker({ rate_limit: 1 });
    const before = await rig.calls('fcall');
    for (let i = 0; i < 5; i++) {
      const r = await w.request(PLAIN);
      expect({ state: r.state, headers: r.headers, override: r.override }).toEqual({ state: 'done', headers: PLAIN, override: undefined });
      await w.response(r.sid, '200');
    }
    expect(await rig.calls('fcall')).toBe(before);
  });

  it("with limit_all_requests have a window of their own: they never spend (nor are refused for) the upgrades' budget", async () => {
    const w = await rig.worker({ rate_limit: 3, rate_window_ms: 60000, limit_all_requests: true, max_connections_per_pod: 10 });
    for (let i = 0; i < 3; i++) expect((await w.request(PLAIN)).state).toBe('done');
    const r = await w.request(PLAIN);
    expect(r.reply?.headers[':status']).toBe('429');
    expect(r.reply?.headers['ratelimit-limit']).toBe('3');
    expect(await rig.admin.zcard(rig.f.keys.rateRequests)).toBe(3);
    // The plain requests' refusal is cached per worker: upgrades are not refused for it.
    for (let i = 0; i < 3; i++) expect((await w.request(UPGRADE)).override).toBeDefined();
    expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(3);
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('429');
    expect((await w.request(PLAIN)).reply?.headers[':status']).toBe('429');
  });

  it('with limit_all_requests, a plain request does not make the window forget later upgrades', async () => {
    // A plain request first, upgrades later: when the plain request leaves its window, the
    // upgrades must still count (no TTL on a shared key).
    const w = await rig.worker({ rate_limit: 2, rate_window_ms: 700, limit_all_requests: true });
    expect((await w.request(PLAIN)).state).toBe('done');
    await new Promise((r) => setTimeout(r, 350));
    expect((await w.request(UPGRADE)).override).toBeDefined();
    expect((await w.request(UPGRADE)).override).toBeDefined();
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('429');
    expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(2);
  });
});

describe('connection inventory (connection_inventory)', () => {
  it('GIVEN it on WHEN admitted THEN {ws}:inventory holds "<pod> <proxy> <client> <start ms>" for the id; a refusal writes none; a release removes it', async () => {
    const w = await rig.worker({ connection_inventory: true, max_connections_per_pod: 1 }, { proxy: 'envoy-inv-1' });
    const before = await rig.f.nowMs();
    const a = await w.request(UPGRADE, undefined, '198.51.100.7:41000');
    await w.response(a.sid, '101');
    const id = admission(a).connection_id!;
    const [pod, proxy, client, start] = (await rig.admin.hget(rig.f.keys.inventory, id))!.split(' ');
    expect({ pod, proxy, client }).toEqual({ pod: a.override!.host, proxy: 'envoy-inv-1', client: '198.51.100.7:41000' });
    expect(Number(start)).toBeGreaterThanOrEqual(before);
    expect(Number(start)).toBeLessThanOrEqual(await rig.f.nowMs());

    const b = await w.request(UPGRADE); // the other pod
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('503'); // full: no entry
    expect(Object.keys(await rig.admin.hgetall(rig.f.keys.inventory)).sort()).toEqual([id, admission(b).connection_id].sort());
    await w.response(b.sid, '403');
    expect(Object.keys(await rig.admin.hgetall(rig.f.keys.inventory))).toEqual([id]);
  });

  it('GIVEN it off THEN nothing is written to the inventory', async () => {
    const w = await rig.worker();
    await openSocket(w);
    expect(await rig.admin.exists(rig.f.keys.inventory)).toBe(0);
  });
});
