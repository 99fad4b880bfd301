// config/settings.ts: the filter's settings.lua from the typed config (exactly the fields
// the filter knows, read back by LuaJIT and by the filter's own settings check).
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { luaString } from '../../config/lua';
import { defaults } from '../../config/schema';
import { filterSettings, renderSettingsLua } from '../../config/settings';
import { BACKEND_PENALTY_MS, METRICS_SNAPSHOT_MS } from '../../envoy/bootstrap';
import { ROOT } from '../support/synth';

/** Runs Lua source through LuaJIT: `chunk` must evaluate to a value; returns what `emit` prints. */
function luajit(script: string): string {
  return execFileSync('luajit', ['-e', script], { encoding: 'utf8' });
}

/** Loads `text` as a chunk with an empty environment (as the filter does) and prints key\ttype\tvalue lines. */
function evalTable(text: string): Record<string, { type: string; value: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'settings-'));
  const file = path.join(dir, 'settings.lua');
  fs.writeFileSync(file, text);
  const out = luajit(`
    local f = assert(io.open(${luaString(file)}, "rb")); local src = f:read("*a"); f:close()
    local chunk = assert(loadstring(src, "=settings.lua")); setfenv(chunk, {})
    local t = chunk()
    local keys = {}; for k in pairs(t) do keys[#keys + 1] = k end; table.sort(keys)
    for _, k in ipairs(keys) do
      local v = t[k]
      local shown = type(v) == "string" and string.format("%q", v) or tostring(v)
      io.write(k, "\\t", type(v), "\\t", shown:gsub("\\n", "n"), "\\n")
    end`);
  const rows: Record<string, { type: string; value: string }> = {};
  for (const line of out.trim().split('\n')) {
    const [k, type, value] = line.split('\t');
    rows[k] = { type, value };
  }
  return rows;
}

const REDIS = { host: 'ws-redis.ws-admission.svc.cluster.local', port: 6379, tls: false, auth: true };

describe('settings.lua', () => {
  const text = renderSettingsLua(defaults(), REDIS);

  it('has exactly the fields of docs/internals.md', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'internals.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## settings.lua'), doc.indexOf('## Envoy names'));
    const documented = [...section.matchAll(/^\| `([a-z0-9_]+)` \|/gm)].map((m) => m[1]).sort();
    expect(documented.length).toBeGreaterThan(10);
    expect(
      filterSettings(defaults(), REDIS)
        .map(([k]) => k)
        .sort(),
    ).toEqual(documented);
  });

  it('parses with LuaJIT in an empty environment and returns the configured values', () => {
    const t = evalTable(text);
    expect(Object.keys(t)).toHaveLength(28);
    expect(t.max_connections_per_pod).toEqual({ type: 'number', value: '2' });
    expect(t.rate_limit).toEqual({ type: 'number', value: '60' });
    expect(t.rate_window_ms).toEqual({ type: 'number', value: '60000' });
    expect(t.lease_ttl_ms).toEqual({ type: 'number', value: '30000' });
    expect(t.renew_interval_ms).toEqual({ type: 'number', value: '10000' });
    expect(t.penalty_ms).toEqual({ type: 'number', value: String(BACKEND_PENALTY_MS) });
    expect(t.metrics_snapshot_ms).toEqual({ type: 'number', value: String(METRICS_SNAPSHOT_MS) });
    expect(t.capacity_cache_ms).toEqual({ type: 'number', value: '250' });
    expect(t.hosts_cache_ms).toBeUndefined();
    expect(t.redis_host).toEqual({ type: 'string', value: '"ws-redis.ws-admission.svc.cluster.local"' });
    expect(t.redis_port).toEqual({ type: 'number', value: '6379' });
    expect(t.redis_password_file).toEqual({ type: 'string', value: '"/etc/ws-redis/password"' });
    expect(t.redis_tls).toEqual({ type: 'boolean', value: 'false' });
    expect(t.failure_mode).toEqual({ type: 'string', value: '"open"' });
    expect(t.hash_tag).toEqual({ type: 'string', value: '"ws"' });
    expect(t.backend_cluster).toEqual({ type: 'string', value: '"backend"' });
    expect(t.admin_cluster).toEqual({ type: 'string', value: '"envoy_admin"' });
    expect(t.metrics_path).toEqual({ type: 'string', value: '"/metrics"' });
    expect(t.limit_all_requests).toEqual({ type: 'boolean', value: 'false' });
    expect(t.connection_inventory).toEqual({ type: 'boolean', value: 'false' });
    expect(t.max_connections_per_client).toEqual({ type: 'number', value: '0' });
    expect(t.max_connections_per_client_percent).toEqual({ type: 'number', value: '50' });
    expect(t.rate_limit_per_client).toEqual({ type: 'number', value: '20' });
    expect(t.client_identity).toEqual({ type: 'string', value: '"address"' });
    expect(t.client_header).toEqual({ type: 'string', value: '""' });
    expect(t.client_ipv6_prefix_bits).toEqual({ type: 'number', value: '64' });
  });

  it('carries changed limits and an external Redis without AUTH', () => {
    const c = {
      ...defaults(),
      maxConnectionsPerPod: 9,
      rateLimitPerMinute: 0,
      redisFailureMode: 'closed' as const,
      limitAllRequests: true,
      hashTag: 'chat:1',
      leaseTtlSeconds: 45,
      renewIntervalSeconds: 20,
    };
    const t = evalTable(renderSettingsLua(c, { host: '10.0.0.5', port: 6380, tls: true, auth: false }));
    expect(t.max_connections_per_pod.value).toBe('9');
    expect(t.rate_limit.value).toBe('0');
    expect(t.failure_mode.value).toBe('"closed"');
    expect(t.limit_all_requests.value).toBe('true');
    expect(t.hash_tag.value).toBe('"chat:1"');
    expect(t.redis_password_file.value).toBe('""');
    expect(t.redis_tls.value).toBe('true');
    expect(t.redis_port.value).toBe('6380');
    expect([t.lease_ttl_ms.value, t.renew_interval_ms.value]).toEqual(['45000', '20000']);
  });

  const loader = path.join(ROOT, 'lua', 'envoy', 'settings_loader.lua');
  (fs.existsSync(loader) ? it : it.skip)("passes the filter's own settings check (lua/envoy/settings_loader.lua)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'settings-'));
    fs.writeFileSync(path.join(dir, 'settings.lua'), text);
    const out = luajit(`
      package.path = ${luaString(path.join(ROOT, 'lua', 'envoy', '?.lua'))} .. ";" .. package.path
      local M = require("settings_loader")
      local s, errs = M.load(${luaString(path.join(dir, 'settings.lua'))})
      io.write(s and "ok" or table.concat(errs, "; "))`);
    expect(out).toBe('ok');
  });
});
