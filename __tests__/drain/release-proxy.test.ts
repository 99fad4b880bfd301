// lua/redis/release_proxy.lua against a real redis-server: the Redis half of the
// preStop drain (lua/cli/drain.lua). Contract: the script's header comment.
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../support/redis-server';
import { lease as member, Scripts } from '../redis/support/scripts';

const FAR = 9_999_999_999_999; // a lease that never expires within a test
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';
const P3 = '[fd00::3]:8080';

let server: RedisServer;
let redis: Redis;
let s: Scripts;

beforeAll(async () => {
  server = await startRedis({ password: 's3cret' });
  redis = new Redis({ port: server.port, host: server.host, password: 's3cret', lazyConnect: true });
  await redis.connect();
  s = await Scripts.load(redis, 't');
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
});

/** A lease as the scripts write it: the member in `leases`, and its pod's count. */
async function lease(pod: string, id: string, expiry = FAR) {
  await redis.zadd(s.keys.leases, expiry, member(id, pod));
  await redis.zincrby(s.keys.load, 1, pod);
}
/** Connection ids of the leases on `pod`. */
const members = async (pod: string) =>
  (await redis.zrange(s.keys.leases, 0, -1))
    .filter((m) => m.endsWith(` ${pod}`))
    .map((m) => m.slice(0, m.indexOf(' ')))
    .sort();
const released = async () => Number((await redis.hget(s.keys.stats, 'released')) ?? 0);
const releaseProxy = async (proxy: string, ids: string[] = []) => (await s.releaseProxy(proxy, ids)).removed;

describe('release_proxy.lua', () => {
  it("removes only that proxy's leases across pods, counts them in released, and keeps the pods' counts exact", async () => {
    await lease(P1, 'envoy-a|w1|1|x');
    await lease(P1, 'envoy-b|w1|1|y');
    await lease(P2, 'envoy-a|w2|7|z');
    await lease(P2, 'envoy-a|w1|2|q');
    await lease(P3, 'envoy-b|w9|3|r');
    await redis.hset(s.keys.stats, 'released', '4', 'admitted', '9');

    expect(await releaseProxy('envoy-a')).toBe(3);

    expect(await members(P1)).toEqual(['envoy-b|w1|1|y']);
    expect(await members(P2)).toEqual([]);
    expect(await members(P3)).toEqual(['envoy-b|w9|3|r']);
    expect((await s.counts()).load).toEqual({ [P1]: 1, [P3]: 1 });
    expect(await redis.hgetall(s.keys.stats)).toEqual({ released: '7', admitted: '9' });

    // Again: nothing left of envoy-a; nothing written (released unchanged).
    expect(await releaseProxy('envoy-a')).toBe(0);
    expect(await released()).toBe(7);
  });

  it("matches the exact prefix \"<proxy>|\": proxy a never takes ab's, b.a's or a-b's leases", async () => {
    const ids = ['a|1|1|x', 'ab|1|1|x', 'a-b|1|1|x', 'b.a|1|1|x', 'xa|1|1|x', 'a.|1|1|x', 'a|2|1|y', 'a', 'a||', 'a|'];
    for (const id of ids) await lease(P1, id);
    expect(await releaseProxy('a')).toBe(4); // a|1|1|x, a|2|1|y, a||, a|
    expect(await members(P1)).toEqual(['a', 'a-b|1|1|x', 'a.|1|1|x', 'ab|1|1|x', 'b.a|1|1|x', 'xa|1|1|x'].sort());
    expect(await releaseProxy('ab')).toBe(1);
    expect(await releaseProxy('a.')).toBe(1);
    expect(await members(P1)).toEqual(['a', 'a-b|1|1|x', 'b.a|1|1|x', 'xa|1|1|x'].sort());
  });

  it('treats the proxy id as text, never as a pattern: "." and "-" are not wildcards', async () => {
    await lease(P1, 'envoyxa|1|1|x'); // "." would match any character in a Lua pattern
    await lease(P1, 'envoy|1|1|x'); // "-" would make the "y" optional
    await lease(P1, 'envoy.a|1|1|x');
    await lease(P1, 'envo-a|1|1|x');
    expect(await releaseProxy('envoy.a')).toBe(1);
    expect(await releaseProxy('envoy-')).toBe(0);
    expect(await members(P1)).toEqual(['envo-a|1|1|x', 'envoy|1|1|x', 'envoyxa|1|1|x'].sort());
  });

  it("removes expired leases of the proxy not yet given back too (counted as released, like release.lua), and leaves others' expired ones", async () => {
    await lease(P1, 'p|1|1|a', 1); // long expired
    await lease(P1, 'q|1|1|b', 1);
    await lease(P1, 'p|1|2|c');
    expect(await releaseProxy('p')).toBe(2);
    expect(await members(P1)).toEqual(['q|1|1|b']); // admit/snapshot give it back and count it as expired
    expect(await redis.hget(s.keys.stats, 'expired')).toBeNull();
    expect(await released()).toBe(2);
  });

  it('lets admit.lua admit at once onto a pod the proxy filled', async () => {
    const req = { rateLimit: 0, windowMs: 60000, maxPerPod: 2, ttlMs: 60000, pods: [P1] };
    expect((await s.admit({ ...req, id: 'old|w|1|a' })).status).toBe('ADMITTED');
    expect((await s.admit({ ...req, id: 'old|w|2|b' })).status).toBe('ADMITTED');
    expect((await s.admit({ ...req, id: 'new|w|1|c' })).status).toBe('FULL');
    expect(await releaseProxy('old')).toBe(2);
    expect(await s.admit({ ...req, id: 'new|w|3|e' })).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 1 });
  });

  it("with connection ids, removes only those (the filter's phantom leases of lost admit answers)", async () => {
    await lease(P1, 'p|w|1|a');
    await lease(P2, 'p|w|2|b');
    await lease(P2, 'q|w|2|b');
    expect(await releaseProxy('p', ['p|w|2|b', 'q|w|2|b'])).toBe(1); // q's is not p's
    expect(await members(P1)).toEqual(['p|w|1|a']);
    expect(await members(P2)).toEqual(['q|w|2|b']);
  });

  it('scans thousands of leases in steps of about 1000 (Redis is never blocked for the whole set)', async () => {
    const args: (string | number)[] = [];
    for (let i = 0; i < 2500; i++) args.push(FAR, member(`p|w|${i}|x`, P1), FAR, member(`q|w|${i}|x`, P1));
    await redis.zadd(s.keys.leases, ...args);
    await redis.zadd(s.keys.load, 5000, P1);
    const r = await s.releaseProxy('p');
    expect(r.removed).toBe(2500);
    expect(r.steps).toBeGreaterThanOrEqual(3);
    expect(await redis.zcard(s.keys.leases)).toBe(2500);
    expect(await redis.zscore(s.keys.load, P1)).toBe('2500');
    expect(await released()).toBe(2500);
  });

  describe('refuses bad calls with a clear error and writes nothing', () => {
    const L = () => [s.keys.leases, s.keys.load, s.keys.stats];
    const cases: Array<[string, () => Promise<unknown>, string]> = [
      [
        'too few keys',
        () => s.raw('release_proxy', [s.keys.leases], ['p', '0']),
        'ERR release_proxy.lua: expected 3 KEYS and 2+ ARGV, got 1 KEYS and 2 ARGV',
      ],
      ['no cursor', () => s.raw('release_proxy', L(), ['p']), 'ERR release_proxy.lua: expected 3 KEYS and 2+ ARGV, got 3 KEYS and 1 ARGV'],
      [
        'empty proxy id',
        () => s.raw('release_proxy', L(), ['', '0']),
        "ERR release_proxy.lua: ARGV[1] proxy id must be 1-253 characters of a-z, 0-9, '.' and '-' (a DNS-1123 name, as filter.lua derives it from POD_NAME), got ''",
      ],
      ['proxy id with the separator', () => s.raw('release_proxy', L(), ['a|b', '0']), "got 'a|b'"],
      ['proxy id as a glob pattern', () => s.raw('release_proxy', L(), ['*', '0']), "got '*'"],
      ['upper case proxy id (filter.lua lower-cases it)', () => s.raw('release_proxy', L(), ['Envoy-A', '0']), "got 'Envoy-A'"],
      ['too long proxy id', () => s.raw('release_proxy', L(), ['a'.repeat(254), '0']), 'ARGV[1] proxy id must be 1-253'],
      [
        'a cursor that is not digits',
        () => s.raw('release_proxy', L(), ['p', '1 OR 2']),
        "ARGV[2] scan cursor must be digits, got '1 OR 2'",
      ],
    ];
    it.each(cases)('%s', async (_name, run, message) => {
      await lease(P1, 'p|1|1|a');
      const before = JSON.stringify([await redis.hgetall(s.keys.stats), await s.counts()]);
      await expect(run()).rejects.toThrow(message);
      expect(JSON.stringify([await redis.hgetall(s.keys.stats), await s.counts()])).toBe(before);
    });
  });
});
