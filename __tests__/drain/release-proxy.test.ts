// lua/redis/release_proxy.lua against a real redis-server: the Redis half of the
// preStop drain (lua/envoy/drain.lua). Contract: the script's header comment.
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../support/redis-server';

const LUA = path.resolve(__dirname, '..', '..', 'lua', 'redis');
const read = (name: string) => fs.readFileSync(path.join(LUA, `${name}.lua`), 'utf8');
const TAG = '{t}';
const K = { stats: `${TAG}:stats`, pods: `${TAG}:pods`, rate: `${TAG}:rate`, pod: (p: string) => `${TAG}:pod:${p}` };
const FAR = 9_999_999_999_999; // a lease that never expires within a test
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';
const P3 = '[fd00::3]:8080';

let server: RedisServer;
let redis: Redis;
let sha: string;

beforeAll(async () => {
  server = await startRedis({ password: 's3cret' });
  redis = new Redis({ port: server.port, host: server.host, password: 's3cret', lazyConnect: true });
  await redis.connect();
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
  await redis.script('FLUSH');
  sha = (await redis.script('LOAD', read('release_proxy'))) as string;
});

/** The two-call pattern: SMEMBERS the index, then the script over the listed pods. */
async function releaseProxy(proxy: string, pods?: string[]): Promise<number> {
  const list = pods ?? (await redis.smembers(K.pods));
  return (await redis.evalsha(sha, 2 + list.length, K.stats, K.pods, ...list.map(K.pod), proxy, ...list)) as number;
}

/** Leases as the scripts write them, and the pods into the index. */
async function lease(pod: string, id: string, expiry = FAR) {
  await redis.zadd(K.pod(pod), expiry, id);
  await redis.sadd(K.pods, pod);
}

const members = (pod: string) => redis.zrange(K.pod(pod), 0, -1);
const released = async () => Number((await redis.hget(K.stats, 'released')) ?? 0);

describe('release_proxy.lua', () => {
  it('removes only that proxy\'s leases across pods, counts them in released, and keeps the index exact', async () => {
    await lease(P1, 'envoy-a|w1|1|x');
    await lease(P1, 'envoy-b|w1|1|y');
    await lease(P2, 'envoy-a|w2|7|z');
    await lease(P2, 'envoy-a|w1|2|q');
    await lease(P3, 'envoy-b|w9|3|r');
    await redis.hset(K.stats, 'released', '4', 'admitted', '9');

    expect(await releaseProxy('envoy-a')).toBe(3);

    expect(await members(P1)).toEqual(['envoy-b|w1|1|y']);
    expect(await redis.exists(K.pod(P2))).toBe(0); // its last lease went: the set is gone...
    expect((await redis.smembers(K.pods)).sort()).toEqual([P1, P3].sort()); // ...and the pod left the index
    expect(await members(P3)).toEqual(['envoy-b|w9|3|r']);
    expect(await redis.hgetall(K.stats)).toEqual({ released: '7', admitted: '9' });

    // Again: nothing left of envoy-a; nothing written (released unchanged).
    expect(await releaseProxy('envoy-a')).toBe(0);
    expect(await released()).toBe(7);
  });

  it('matches the exact prefix "<proxy>|": proxy a never takes ab\'s, b.a\'s or a-b\'s leases', async () => {
    const ids = ['a|1|1|x', 'ab|1|1|x', 'a-b|1|1|x', 'b.a|1|1|x', 'xa|1|1|x', 'a.|1|1|x', 'a|2|1|y', 'a', 'a||', 'a|'];
    for (const id of ids) await lease(P1, id);
    expect(await releaseProxy('a')).toBe(4); // a|1|1|x, a|2|1|y, a||, a|
    expect((await members(P1)).sort()).toEqual(['a', 'a-b|1|1|x', 'a.|1|1|x', 'ab|1|1|x', 'b.a|1|1|x', 'xa|1|1|x'].sort());
    expect(await releaseProxy('ab')).toBe(1);
    expect(await releaseProxy('a.')).toBe(1);
    expect((await members(P1)).sort()).toEqual(['a', 'a-b|1|1|x', 'b.a|1|1|x', 'xa|1|1|x'].sort());
  });

  it('treats the proxy id as text, never as a Lua pattern: "." and "-" are not wildcards', async () => {
    await lease(P1, 'envoyxa|1|1|x');   // "." would match any character
    await lease(P1, 'envoy|1|1|x');     // "-" would make the "y" optional
    await lease(P1, 'envoy.a|1|1|x');
    await lease(P1, 'envo-a|1|1|x');
    expect(await releaseProxy('envoy.a')).toBe(1);
    expect(await releaseProxy('envoy-')).toBe(0);
    expect((await members(P1)).sort()).toEqual(['envo-a|1|1|x', 'envoy|1|1|x', 'envoyxa|1|1|x'].sort());
  });

  it('removes expired-but-unpruned leases of the proxy too (counted as released, like release.lua), and leaves others\' expired ones', async () => {
    await lease(P1, 'p|1|1|a', 1); // long expired
    await lease(P1, 'q|1|1|b', 1);
    await lease(P1, 'p|1|2|c');
    expect(await releaseProxy('p')).toBe(2);
    expect(await members(P1)).toEqual(['q|1|1|b']); // not pruned: admit/snapshot count it as expired
    expect(await redis.hget(K.stats, 'expired')).toBeNull();
    expect(await released()).toBe(2);
  });

  it('drops admit.lua\'s "all full" hint when it frees a slot, and keeps it when it frees none', async () => {
    await lease(P1, 'q|1|1|b');
    await lease(P1, 'q|1|2|c');
    // The hint as admit.lua writes it (stats field hint:full); see lua/redis/README.md.
    const hint = `${FAR}002${K.pod(P1)}\0${K.pod(P2)}`;
    await redis.hset(K.stats, 'hint:full', hint);
    expect(await releaseProxy('p')).toBe(0);
    expect(await redis.hget(K.stats, 'hint:full')).toBe(hint); // nothing freed: still true
    await lease(P2, 'p|1|1|a');
    expect(await releaseProxy('p')).toBe(1);
    expect(await redis.hget(K.stats, 'hint:full')).toBeNull();
  });

  it('lets admit.lua admit at once onto a pod the proxy filled (the hint admit wrote does not survive)', async () => {
    const admit = (await redis.script('LOAD', read('admit'))) as string;
    const doAdmit = async (id: string) => (await redis.evalsha(
      admit, 4, K.rate, K.stats, K.pods, K.pod(P1), '0', '60000', '2', '60000', id, P1,
    )) as [string, string, number, number, number];
    expect((await doAdmit('old|w|1|a'))[0]).toBe('ADMITTED');
    expect((await doAdmit('old|w|2|b'))[0]).toBe('ADMITTED');
    expect((await doAdmit('new|w|1|c'))[0]).toBe('FULL');
    expect((await doAdmit('new|w|2|d'))[0]).toBe('FULL'); // (refused from the hint, if admit keeps one)
    expect(await releaseProxy('old')).toBe(2);
    expect(await redis.sismember(K.pods, P1)).toBe(0);
    const r = await doAdmit('new|w|3|e');
    expect(r.slice(0, 3)).toEqual(['ADMITTED', P1, 1]);
    expect(await redis.sismember(K.pods, P1)).toBe(1);
  });

  it('removes from the index a listed pod whose set is already gone', async () => {
    await redis.sadd(K.pods, P1, P2);
    await lease(P2, 'q|1|1|a');
    expect(await releaseProxy('p')).toBe(0);
    expect(await redis.smembers(K.pods)).toEqual([P2]);
    expect(await redis.hexists(K.stats, 'released')).toBe(0);
  });

  it('accepts no pods (an empty index) and pods that are not indexed (any subset, e.g. chunks)', async () => {
    expect(await releaseProxy('p', [])).toBe(0);
    await redis.zadd(K.pod(P3), FAR, 'p|1|1|a'); // a set the index lost (hand-deleted index)
    await lease(P1, 'p|1|2|b');
    expect(await releaseProxy('p', [P3])).toBe(1);
    expect(await releaseProxy('p', [P1])).toBe(1);
    expect(await redis.exists(K.pod(P1), K.pod(P3))).toBe(0);
    expect(await released()).toBe(2);
  });

  it('removes thousands of leases of one pod in one call (ZREM in batches)', async () => {
    const args: (string | number)[] = [];
    for (let i = 0; i < 2500; i++) args.push(FAR, `p|w|${i}|x`, FAR, `q|w|${i}|x`);
    await redis.zadd(K.pod(P1), ...args);
    await redis.sadd(K.pods, P1);
    expect(await releaseProxy('p')).toBe(2500);
    expect(await redis.zcard(K.pod(P1))).toBe(2500);
    expect(await released()).toBe(2500);
  });

  describe('refuses bad calls with a clear error and writes nothing', () => {
    const cases: Array<[string, () => Promise<unknown>, string]> = [
      ['too few keys', () => redis.evalsha(sha, 1, K.stats, 'p'),
        'ERR release_proxy.lua: expected 2+n KEYS and 1+n ARGV for n pods, got 1 KEYS and 1 ARGV'],
      ['keys and pods disagree in number', () => redis.evalsha(sha, 3, K.stats, K.pods, K.pod(P1), 'p'),
        'ERR release_proxy.lua: expected 2+n KEYS and 1+n ARGV for n pods, got 3 KEYS and 1 ARGV'],
      ['empty proxy id', () => redis.evalsha(sha, 2, K.stats, K.pods, ''),
        "ERR release_proxy.lua: ARGV[1] proxy id must be 1-253 characters of a-z, 0-9, '.' and '-' (a DNS-1123 name, as filter.lua derives it from POD_NAME), got ''"],
      ['proxy id with the separator', () => redis.evalsha(sha, 2, K.stats, K.pods, 'a|b'), "got 'a|b'"],
      ['proxy id as a pattern', () => redis.evalsha(sha, 2, K.stats, K.pods, '.*'), "got '.*'"],
      ['upper case proxy id (filter.lua lower-cases it)', () => redis.evalsha(sha, 2, K.stats, K.pods, 'Envoy-A'), "got 'Envoy-A'"],
      ['too long proxy id', () => redis.evalsha(sha, 2, K.stats, K.pods, 'a'.repeat(254)), 'ARGV[1] proxy id must be 1-253'],
      ['key of another pod', () => redis.evalsha(sha, 4, K.stats, K.pods, K.pod(P1), K.pod(P2), 'p', P1, P3),
        `ERR release_proxy.lua: KEYS[4] '${K.pod(P2)}' is not the lease set of pod ARGV[3] '${P3}' (expected a key ending in ':pod:${P3}')`],
      ['empty pod id', () => redis.evalsha(sha, 3, K.stats, K.pods, K.pod(P1), 'p', ''), "is not the lease set of pod ARGV[2] ''"],
      ['a pod id that is only a suffix of the key', () => redis.evalsha(sha, 3, K.stats, K.pods, K.pod(P1), 'p', '8080'),
        "is not the lease set of pod ARGV[2] '8080'"],
    ];
    it.each(cases)('%s', async (_name, run, message) => {
      await lease(P1, 'p|1|1|a');
      await redis.hset(K.stats, 'hint:full', `${FAR}001${K.pod(P1)}`);
      const before = JSON.stringify([await redis.hgetall(K.stats), await members(P1), await redis.smembers(K.pods)]);
      await expect(run()).rejects.toThrow(message);
      expect(JSON.stringify([await redis.hgetall(K.stats), await members(P1), await redis.smembers(K.pods)])).toBe(before);
    });
  });
});
