// ws_release_proxy (lua/redis/ws_admission.lua): the Redis half of the preStop drain
// (lua/cli/drain.lua), called as the proxies' ACL user as the drain calls it. The library's
// own tests (__tests__/redis/ws_admission.test.ts) show the prefix and the scan in steps;
// here: what a drain relies on -- whose leases go, what else follows them, and that a bad
// call writes nothing.
import Redis from 'ioredis';
import { Functions } from '../redis/support/functions';
import { useAdmissionRig } from '../support/admission-rig';

const rig = useAdmissionRig();
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';
const P3 = '[fd00::3]:8080';

let asProxy: Functions;
let proxyClient: Redis;
beforeAll(async () => {
  const u = rig.redis.users!.proxy;
  // (No ready check: it runs INFO, which the proxies' ACL refuses.)
  proxyClient = new Redis({
    port: rig.redis.port,
    host: rig.redis.host,
    username: u.name,
    password: u.password,
    lazyConnect: true,
    enableReadyCheck: false,
  });
  await proxyClient.connect();
  asProxy = new Functions(proxyClient, 'ws');
});
afterAll(() => {
  proxyClient.disconnect();
});

/** Open streams as the agents report them (ws_leases R): leases on their pods. */
async function open(...pairs: Array<[string, string]>): Promise<void> {
  await rig.f.leases(
    60000,
    0,
    pairs.map(([id, pod]) => ['R', id, pod] as const),
  );
}
const members = async (pod: string) =>
  (await rig.admin.zrange(rig.f.keys.leases, 0, -1))
    .filter((m) => m.endsWith(` ${pod}`))
    .map((m) => m.slice(0, m.indexOf(' ')))
    .sort();

describe('ws_release_proxy', () => {
  it("GIVEN leases of several proxies on several pods THEN only that proxy's go; counts, per-proxy counts and released follow", async () => {
    await open(['envoy-a|w1|1|x', P1], ['envoy-b|w1|1|y', P1], ['envoy-a|w2|7|z', P2], ['envoy-a|w1|2|q', P2], ['envoy-b|w9|3|r', P3]);
    expect(await asProxy.releaseProxy('envoy-a')).toEqual({ removed: 3, steps: 1 });
    expect([await members(P1), await members(P2), await members(P3)]).toEqual([['envoy-b|w1|1|y'], [], ['envoy-b|w9|3|r']]);
    const c = await rig.f.counts();
    expect(c.load).toEqual({ [P1]: 1, [P3]: 1 });
    expect(c.proxyFields).toEqual({ 'envoy-b': 2 });
    expect(await rig.stats()).toEqual({ reregistered: 5, released: 3 });
    // Again: nothing left of envoy-a, nothing written.
    expect(await asProxy.releaseProxy('envoy-a')).toEqual({ removed: 0, steps: 1 });
    expect((await rig.stats()).released).toBe(3);
  });

  it("matches the exact prefix \"<proxy>|\": proxy a never takes ab's, a-b's, b.a's or a.'s leases", async () => {
    await open(
      ...['a|1|1|x', 'ab|1|1|x', 'a-b|1|1|x', 'b.a|1|1|x', 'xa|1|1|x', 'a.|1|1|x', 'a|2|1|y'].map((id) => [id, P1] as [string, string]),
    );
    expect((await asProxy.releaseProxy('a')).removed).toBe(2);
    expect(await members(P1)).toEqual(['a-b|1|1|x', 'a.|1|1|x', 'ab|1|1|x', 'b.a|1|1|x', 'xa|1|1|x']);
    expect((await asProxy.releaseProxy('ab')).removed).toBe(1);
    expect((await asProxy.releaseProxy('a.')).removed).toBe(1);
  });

  it('treats the proxy id as text, never as a pattern: "." and "-" match only themselves', async () => {
    await open(['envoyxa|1|1|x', P1], ['envoy|1|1|x', P1], ['envoy.a|1|1|x', P1], ['envo-a|1|1|x', P1]);
    expect((await asProxy.releaseProxy('envoy.a')).removed).toBe(1);
    expect((await asProxy.releaseProxy('envoy-')).removed).toBe(0);
    expect(await members(P1)).toEqual(['envo-a|1|1|x', 'envoy|1|1|x', 'envoyxa|1|1|x'].sort());
  });

  it("GIVEN the proxy's own lapsed leases THEN they go too, as released; another proxy's lapsed one stays (for the expiry)", async () => {
    await rig.f.leases(1, 0, [
      ['R', 'p|1|1|a', P1],
      ['R', 'q|1|1|b', P1],
    ]);
    await open(['p|1|2|c', P1]);
    await new Promise((r) => setTimeout(r, 20));
    expect((await asProxy.releaseProxy('p')).removed).toBe(2);
    expect(await members(P1)).toEqual(['q|1|1|b']);
    expect(await rig.stats()).toMatchObject({ released: 2 });
    expect((await rig.stats()).expired).toBeUndefined();
  });

  it("GIVEN the proxy's connection inventory THEN its fields go with its leases, others' stay", async () => {
    await rig.f.reach('p', [P1]);
    await rig.f.reach('q', [P1]);
    for (const id of ['p|ab|1|cd', 'q|ab|1|cd']) {
      expect((await rig.f.admitOnce({ rateLimit: 0, windowMs: 60000, maxPerPod: 5, ttlMs: 60000, id, client: '1.2.3.4:5' })).status).toBe(
        'ADMITTED',
      );
    }
    await asProxy.releaseProxy('p');
    expect(Object.keys(await rig.admin.hgetall(rig.f.keys.inventory))).toEqual(['q|ab|1|cd']);
  });

  it('GIVEN a pod no proxy reaches any more THEN it leaves load with its last lease; a reached one stays at 0', async () => {
    await rig.f.reach('p', [P1]);
    await open(['p|1|1|a', P1], ['p|1|2|b', P2]); // P2 is reached by nobody (it left the fleet)
    await asProxy.releaseProxy('p');
    expect(await rig.admin.zrange(rig.f.keys.load, 0, -1, 'WITHSCORES')).toEqual([P1, '0']);
  });

  it('GIVEN a proxy that filled a pod THEN ws_admit admits onto it at once after the drain', async () => {
    await rig.f.reach('old', [P1]);
    await rig.f.reach('new', [P1]);
    const req = { rateLimit: 0, windowMs: 60000, maxPerPod: 2, ttlMs: 60000 };
    expect((await rig.f.admitOnce({ ...req, id: 'old|w|1|a' })).status).toBe('ADMITTED');
    expect((await rig.f.admitOnce({ ...req, id: 'old|w|2|b' })).status).toBe('ADMITTED');
    expect((await rig.f.admitOnce({ ...req, id: 'new|w|1|c' })).status).toBe('FULL');
    expect((await asProxy.releaseProxy('old')).removed).toBe(2);
    expect(await rig.f.admitOnce({ ...req, id: 'new|w|3|e' })).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 1 });
  });

  describe('refuses a bad call with a clear error and writes nothing', () => {
    const L = () => rig.f.releaseProxyKeys();
    const PROXY_ID = 'argument 1 (proxy id) must be 1-';
    const cases: Array<[string, () => Promise<unknown>, string]> = [
      [
        'too few keys',
        () => asProxy.fcall('ws_release_proxy', [rig.f.keys.leases], ['p', '0']),
        'ERR ws_release_proxy: expected 7 keys and 2 arguments, got 1 keys and 2 arguments',
      ],
      [
        'no cursor',
        () => asProxy.fcall('ws_release_proxy', L(), ['p']),
        'ERR ws_release_proxy: expected 7 keys and 2 arguments, got 7 keys and 1 arguments',
      ],
      ['an empty proxy id', () => asProxy.fcall('ws_release_proxy', L(), ['', '0']), `${PROXY_ID}`],
      ['a proxy id with the separator', () => asProxy.fcall('ws_release_proxy', L(), ['a|b', '0']), "got 'a|b'"],
      ['a proxy id as a glob pattern', () => asProxy.fcall('ws_release_proxy', L(), ['*', '0']), "got '*'"],
      [
        'an upper case proxy id (the filter lower-cases it)',
        () => asProxy.fcall('ws_release_proxy', L(), ['Envoy-A', '0']),
        "got 'Envoy-A'",
      ],
      ['a too long proxy id', () => asProxy.fcall('ws_release_proxy', L(), ['a'.repeat(254), '0']), PROXY_ID],
      [
        'a cursor that is not digits',
        () => asProxy.fcall('ws_release_proxy', L(), ['p', '1 OR 2']),
        "argument 2 (scan cursor) must be digits, got '1 OR 2'",
      ],
    ];
    it.each(cases)('%s', async (_name, run, message) => {
      await open(['p|1|1|a', P1]);
      const before = JSON.stringify([await rig.admin.hgetall(rig.f.keys.stats), await rig.f.counts()]);
      await expect(run()).rejects.toThrow(message);
      expect(JSON.stringify([await rig.admin.hgetall(rig.f.keys.stats), await rig.f.counts()])).toBe(before);
    });
  });

  it("GIVEN the keys of another deployment's hash tag THEN the proxy user is refused by the ACL (it may touch {ws}:* only)", async () => {
    const other = new Functions(proxyClient, 'other');
    await expect(other.releaseProxy('p')).rejects.toThrow(/NOPERM/);
  });
});
