// settings.lua problems: each case is a tiny fixture with its exact log line. The
// filter must not crash requests: it logs once per worker and fails per failure_mode.
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, PLAIN, defaultSettings, settingsLua, Worker } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

// The cases are built before Redis starts; a refused settings file never connects anyway.
function base(): Record<string, unknown> {
  return { ...defaultSettings(6379) };
}
function without(field: string): Record<string, unknown> {
  const s = base();
  delete s[field];
  return s;
}

async function errorsOf(w: Worker): Promise<string[]> {
  const { logs } = await w.logs();
  return logs.filter((l) => l.level === 'err').map((l) => l.msg);
}

const CASES: Array<[string, Record<string, unknown> | string, string]> = [
  ['a missing field', without('rate_limit'), 'ws-admission: settings.rate_limit is missing (want integer)'],
  ['an unknown field', { ...base(), rate_limt: 5 }, 'ws-admission: settings.rate_limt is not a known field (see docs/internals.md)'],
  [
    'a string for an integer',
    { ...base(), redis_port: '6379' },
    'ws-admission: settings.redis_port must be an integer from 1 to 65535 (integer), got string "6379"',
  ],
  [
    'a fraction for an integer',
    { ...base(), lease_ttl_ms: 1500.5 },
    'ws-admission: settings.lease_ttl_ms must be a positive integer (integer), got number 1500.5',
  ],
  [
    'an out-of-range value',
    { ...base(), max_connections_per_pod: 0 },
    'ws-admission: settings.max_connections_per_pod must be a positive integer, got 0',
  ],
  [
    'a string for a boolean',
    { ...base(), redis_tls: 'false' },
    'ws-admission: settings.redis_tls must be boolean (boolean), got string "false"',
  ],
  [
    'a hash tag with braces',
    { ...base(), hash_tag: '{ws}' },
    'ws-admission: settings.hash_tag must be 1-64 characters of letters, digits, _ . : - (no braces), got "{ws}"',
  ],
  [
    'a bad failure mode',
    { ...base(), failure_mode: 'maybe' },
    'ws-admission: settings.failure_mode must be "open" or "closed", got "maybe"',
  ],
  [
    'renew interval not below the lease TTL',
    { ...base(), lease_ttl_ms: 1000, renew_interval_ms: 1000 },
    'ws-admission: settings.renew_interval_ms must be below lease_ttl_ms (1000), got 1000',
  ],
  ['a file that does not parse', 'return { rate_limit = }', 'does not parse'],
  ['a file that is not a table', 'return 42', 'ws-admission: settings.lua must return a table, got number'],
];

describe('settings.lua validation', () => {
  it.each(CASES)('%s: one clear log line naming the field, then fail open', async (_name, settings, message) => {
    const w = await fleet.worker({}, { settings: typeof settings === 'string' ? settings : settingsLua(settings) });
    const r = await w.request(UPGRADE);
    expect(r.state).toBe('done'); // failure_mode open (default when the field itself is unusable)
    expect(r.override).toBeUndefined();
    const errs = await errorsOf(w);
    expect(errs.some((e) => e.includes(message))).toBe(true);
    expect(errs.some((e) => e.includes('filter disabled on this worker; failing open'))).toBe(true);
    // Logged once per worker, not per request; requests never hit a script error.
    const again = await w.request(UPGRADE);
    expect(again.state).toBe('done');
    expect(await errorsOf(w)).toEqual([]);
    expect((await w.request(PLAIN)).state).toBe('done');
  });

  it('a broken settings file with failure_mode "closed" refuses upgrades with 503 (plain requests pass)', async () => {
    const w = await fleet.worker({}, { settings: settingsLua({ ...without('hash_tag'), failure_mode: 'closed' }) });
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('503');
    expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    expect((await w.request(PLAIN)).state).toBe('done');
    const errs = await errorsOf(w);
    expect(errs).toContain('ws-admission: settings.hash_tag is missing (want string)');
    expect(errs).toContain('ws-admission: filter disabled on this worker; failing closed');
  });

  it('an empty settings table names every missing field', async () => {
    const w = await fleet.worker({}, { settings: 'return {}' });
    const r = await w.request(UPGRADE);
    expect(r.state).toBe('done');
    const errs = await errorsOf(w);
    expect(errs).toContain('ws-admission: settings.backend_cluster is missing (want string)');
    expect(errs.filter((e) => e.includes('is missing'))).toHaveLength(21); // every field of docs/internals.md
  });
});
