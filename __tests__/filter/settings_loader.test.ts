// lua/envoy/settings_loader.lua: the generated settings.lua, checked once per worker. Each
// bad file is one tiny fixture with its exact log line; the filter then fails per
// failure_mode, never with a script error. The three descriptions of the fields -- the
// stack's writer (config/settings.ts), the Lua loader (FIELDS) and the harness's defaults
// -- cannot drift apart; and the file the stack writes is accepted as is.
import { defaults, filterSettings, renderSettingsLua } from '../../config';
import { useAdmissionRig } from '../support/admission-rig';
import { lua } from '../support/luajit';
import { PLAIN, UPGRADE, Worker, defaultSettings, settingsLua } from './harness/worker';

const rig = useAdmissionRig();

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
const STACK_FIELDS = filterSettings(defaults(), { host: 'h', port: 1, tls: false, auth: false }).map(([k]) => k);

const CASES: Array<[string, Record<string, unknown> | string, string]> = [
  ['a missing field', without('rate_limit'), 'ws-admission: settings.rate_limit is missing (want integer)'],
  ['an unknown field', { ...base(), rate_limt: 5 }, 'ws-admission: settings.rate_limt is not a known field (see docs/internals.md)'],
  [
    'a field of an older filter',
    { ...base(), hosts_cache_ms: 1000 },
    'ws-admission: settings.hosts_cache_ms is not a known field (see docs/internals.md)',
  ],
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
    'a negative penalty',
    { ...base(), penalty_ms: -1 },
    'ws-admission: settings.penalty_ms must be an integer >= 0 (0 = no penalty), got -1',
  ],
  [
    'a snapshot interval under 100 ms',
    { ...base(), metrics_snapshot_ms: 50 },
    'ws-admission: settings.metrics_snapshot_ms must be an integer >= 100, got 50',
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
  ['a file that is code', 'return { x = os.exit(1) }', 'failed to run'],
];

describe('settings.lua refused: one clear log line per worker, then fail per failure_mode', () => {
  it.each(CASES)('GIVEN %s THEN its line, and the filter fails open', async (_name, settings, message) => {
    const w = await rig.worker({}, { settings: typeof settings === 'string' ? settings : settingsLua(settings) });
    const r = await w.request(UPGRADE);
    expect({ state: r.state, override: r.override }).toEqual({ state: 'done', override: undefined });
    const errs = await errorsOf(w);
    expect(errs.filter((e) => e.includes(message))).toHaveLength(1);
    expect(errs).toContain('ws-admission: filter disabled on this worker; failing open');
    // Logged once per worker, not per request; requests never hit a script error.
    expect((await w.request(UPGRADE)).state).toBe('done');
    expect((await w.request(PLAIN)).state).toBe('done');
    expect(await errorsOf(w)).toEqual([]);
  });

  it('GIVEN a broken file with failure_mode "closed" THEN upgrades get 503 redis_unavailable, plain requests pass', async () => {
    const w = await rig.worker({}, { settings: settingsLua({ ...without('hash_tag'), failure_mode: 'closed' }) });
    expect((await w.request(UPGRADE)).reply?.headers).toMatchObject({ ':status': '503', 'x-ws-admission': 'redis_unavailable' });
    expect((await w.request(PLAIN)).state).toBe('done');
    const errs = await errorsOf(w);
    expect(errs).toContain('ws-admission: settings.hash_tag is missing (want string)');
    expect(errs).toContain('ws-admission: filter disabled on this worker; failing closed');
  });

  it('GIVEN an empty table THEN every field the stack writes is named missing, and no other', async () => {
    const w = await rig.worker({}, { settings: 'return {}' });
    await w.request(UPGRADE);
    const missing = (await errorsOf(w)).map((e) => /^ws-admission: settings\.(\w+) is missing/.exec(e)?.[1]).filter(Boolean);
    expect(missing.sort()).toEqual([...STACK_FIELDS].sort());
  });
});

describe('the fields, described three times', () => {
  it("config/settings.ts writes exactly the loader's FIELDS, and the harness's defaults have exactly them", () => {
    const fields = lua<string[]>(`local names = {}
for k in pairs(require("settings_loader").FIELDS) do names[#names + 1] = k end
table.sort(names)
out(names)`);
    expect([...STACK_FIELDS].sort()).toEqual(fields);
    expect(Object.keys(defaultSettings(1)).sort()).toEqual(fields);
  });

  it('GIVEN the settings.lua the stack writes THEN the filter admits with it and metrics.lua serves its metrics_path', async () => {
    const proxy = rig.redis.users!.proxy;
    const text = renderSettingsLua(defaults(), {
      host: '127.0.0.1',
      port: rig.redis.port,
      tls: false,
      auth: true,
      username: proxy.name,
      passwordFile: proxy.passwordFile,
    });
    const w = await rig.worker({}, { settings: text });
    expect((await w.request(UPGRADE)).override).toBeDefined();
    expect(await errorsOf(w)).toEqual([]);
    const m = await rig.worker({}, { settings: text, script: 'metrics.lua' });
    const scrape = await m.request([
      [':method', 'GET'],
      [':path', '/metrics'],
    ]);
    expect(scrape.reply?.headers[':status']).toBe('200');
    expect(scrape.reply?.body).toMatch(/^ws_admission_rate_limit 60$/m);
    expect(scrape.reply?.body).toMatch(/^ws_admission_max_connections_per_pod 2$/m);
  });
});

describe('proxy_id: the proxy part of every connection id (filter, agent and drain alike)', () => {
  const id = (env: Record<string, string>, unset: string[] = [], hostname = 'nil') =>
    lua<string>(`out(require("settings_loader").proxy_id(${hostname}))`, { env, unset });

  it.each([
    ['ws-envoy-6f7c9d8b5d-x7k2p', 'ws-envoy-6f7c9d8b5d-x7k2p'],
    ['WS_Envoy.Pod:1', 'ws-envoy.pod-1'],
    ['a|b c', 'a-b-c'],
    ['x'.repeat(80), 'x'.repeat(63)],
  ])('GIVEN POD_NAME %j THEN %j (lower case, [a-z0-9.-], at most 63: never a "|")', (pod, want) => {
    expect(id({ POD_NAME: pod })).toBe(want);
  });

  it('GIVEN no POD_NAME (or an empty one) THEN the host name, else "unknown"', () => {
    expect(id({}, ['POD_NAME'], 'function() return "Node_1" end')).toBe('node-1');
    expect(id({ POD_NAME: '' }, [], 'function() return "node-2" end')).toBe('node-2');
    expect(id({}, ['POD_NAME'])).toBe('unknown');
  });
});

describe('redis_options: the connection settings every Lua program passes to resp.lua', () => {
  it('GIVEN checked settings THEN host, port, password file, user, TLS and the timeouts', () => {
    const s = { ...defaultSettings(6390), redis_username: 'ws-proxy', redis_password_file: '/etc/ws-redis/password', redis_tls: true };
    const lit = Object.entries(s)
      .map(([k, v]) => `${k} = ${JSON.stringify(v)}`)
      .join(', ');
    expect(lua(`out(require("settings_loader").redis_options({ ${lit} }))`)).toEqual({
      host: '127.0.0.1',
      port: 6390,
      password_file: '/etc/ws-redis/password',
      username: 'ws-proxy',
      tls: true,
      connect_timeout_ms: 200,
      read_timeout_ms: 200,
    });
  });
});
