// The filter's pure modules on their own, under real LuaJIT: no Envoy API, no Redis.
// (The flow through them is tested by the other files here and, through the real Envoy,
// by __tests__/e2e.)
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { STATE_DIR, STATE_FILES } from '../../envoy/bootstrap';

const LUA = path.resolve(__dirname, '..', '..', 'lua', 'envoy');
const HARNESS = path.resolve(__dirname, 'harness');

/** Runs `code` under luajit with lua/envoy on package.path; `out(v)` prints v as JSON. */
function lua(code: string, env: Record<string, string> = {}): unknown {
  const prelude = `package.path = "${LUA}/?.lua;${HARNESS}/?.lua;" .. package.path
local json = require("json_out")
local function out(v) io.write(json.encode(v)) end
`;
  const text = execFileSync('luajit', ['-e', prelude + code], { encoding: 'utf8', timeout: 20000, env: { ...process.env, ...env } });
  return JSON.parse(text) as unknown;
}

const SETTINGS = `{ hash_tag = "ws", rate_limit = 60, rate_window_ms = 60000, max_connections_per_pod = 2, lease_ttl_ms = 360000 }`;

describe('admission.lua: the Redis calls of the filter', () => {
  it('GIVEN the settings WHEN the calls are built THEN each names the keys and arguments of its script contract (lua/redis/README.md)', () => {
    const calls = lua(`local A = require("admission").new(${SETTINGS})
out({ A.admit("p|w|1|r", "0123456789abcdef", "e1"), A.register_view("0123456789abcdef", { "10.0.0.1:80", "10.0.0.2:80" }),
  A.renew("p|w|1|r", "10.0.0.1:80"), A.release("p|w|1|r", "10.0.0.1:80"), A.reregister("p|w|1|r", "10.0.0.1:80"),
  A.release_proxy("p", "0", { "p|w|1|r" }), A.inventory("p|w|1|r", "10.0.0.1:80", "p", "1.2.3.4:5"), A.snapshot() })`);
    expect(calls).toEqual([
      {
        script: 'admit',
        keys: ['{ws}:rate', '{ws}:stats', '{ws}:leases', '{ws}:load', '{ws}:views', '{ws}:hosts'],
        args: [60, 60000, 2, 360000, 'p|w|1|r', '0123456789abcdef', 'e1'],
      },
      {
        script: 'register_view',
        keys: ['{ws}:views', '{ws}:hosts', '{ws}:load'],
        args: ['0123456789abcdef', '10.0.0.1:80', '10.0.0.2:80'],
      },
      { script: 'renew', keys: ['{ws}:leases'], args: ['p|w|1|r', '10.0.0.1:80', 360000] },
      { script: 'release', keys: ['{ws}:leases', '{ws}:load', '{ws}:stats'], args: ['p|w|1|r', '10.0.0.1:80'] },
      { script: 'reregister', keys: ['{ws}:leases', '{ws}:load', '{ws}:stats'], args: ['p|w|1|r', '10.0.0.1:80', 360000] },
      { script: 'release_proxy', keys: ['{ws}:leases', '{ws}:load', '{ws}:stats'], args: ['p', '0', 'p|w|1|r'] },
      { script: 'conn_inventory', keys: ['{ws}:conn:p|w|1|r', '{ws}:leases'], args: ['p|w|1|r', '10.0.0.1:80', 360000, 'p', '1.2.3.4:5'] },
      { script: 'snapshot', keys: ['{ws}:rate', '{ws}:stats', '{ws}:leases', '{ws}:load'], args: [60000] },
    ]);
  });

  it.each([
    ['an admission', `{ "ADMITTED", "10.0.0.1:80", 1, 0, 59 }`, { status: 'ADMITTED', pod: '10.0.0.1:80' }],
    ['a rate limit refusal', `{ "RATE_LIMITED", "", 0, 1234, 0 }`, { status: 'RATE_LIMITED', retry_ms: 1234 }],
    ['a full refusal (its wait capped)', `{ "FULL", "", 0, 90000, 10 }`, { status: 'FULL', retry_ms: 5000 }],
    ['a full refusal with no lease to wait for', `{ "FULL", "", 0, 0, 10 }`, { status: 'FULL', retry_ms: 1000 }],
    ['an unknown view', `{ "HOSTS", "", 0, 0, 10 }`, { status: 'HOSTS' }],
    ['another state epoch', `{ "EPOCH", "e2", 0, 0, 0 }`, { status: 'EPOCH' }],
  ])('GIVEN %s WHEN decided THEN %j', (_what, reply, decision) => {
    expect(lua(`out(require("admission").decide(${reply}, 5000))`)).toEqual(decision);
  });

  it('GIVEN a reply admit.lua never gives WHEN decided THEN nil (the filter fails per failure_mode)', () => {
    expect(
      lua(`local A = require("admission")
out({ A.decide({ "ADMITTED" }, 5000) == nil, A.decide("OK", 5000) == nil, A.decide({ "MAYBE", "", 0, 0, 0 }, 5000) == nil })`),
    ).toEqual([true, true, true]);
  });
});

describe('upgrade.lua: what a request is', () => {
  it.each([
    ['Upgrade', 'upgrade', true],
    ['keep-alive, Upgrade', 'upgrade', true],
    [' keep-alive ,\tUPGRADE ', 'upgrade', true],
    ['upgrades', 'upgrade', false],
    ['x-upgrade, keep-alive', 'upgrade', false],
    ['', 'upgrade', false],
  ])('has_token(%j, %j) = %j', (value, token, want) => {
    expect(lua(`out({ require("upgrade").has_token(${JSON.stringify(value)}, "${token}") })`)).toEqual([want]);
  });
});

describe('runtime.lua: the clock can be driven (no sleeping)', () => {
  it('GIVEN a clock set by a test WHEN read THEN it is that clock; restored THEN the wall clock again', () => {
    const [driven, wall] = lua(`local runtime = require("runtime")
local t = 1000
runtime.set_clock(function() return t end)
local a = runtime.now_ms()
t = 5000
local b = runtime.now_ms()
runtime.set_clock(nil)
out({ { a, b }, runtime.now_ms() })`) as [number[], number];
    expect(driven).toEqual([1000, 5000]);
    expect(Math.abs(wall - Date.now())).toBeLessThan(5000);
  });
});

describe('drain_marker.lua: the preStop drain tells the filter to stop re-registering', () => {
  it('GIVEN a marker written after this worker loaded THEN active; one from before, from the future or too old THEN not', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-marker-'));
    const out = lua(
      `local runtime = require("runtime")
local marker = require("drain_marker")
local t = 100000
runtime.set_clock(function() return t end)
local r = { marker.active(0) }            -- none yet
marker.write(t, "envoy-a")
r[#r + 1] = marker.active(50000)          -- written after load
r[#r + 1] = marker.active(150000)         -- written before this worker loaded
t = 100000 + marker.MAX_AGE_MS
r[#r + 1] = marker.active(50000)          -- too old
t = 50000
r[#r + 1] = marker.active(0)              -- in the future (the clock was stepped back)
local f = io.open(runtime.path("draining"), "rb")
r[#r + 1] = f:read("*a")
f:close()
out(r)`,
      { WS_STATE_DIR: dir },
    );
    expect(out).toEqual([false, true, false, false, false, '100000\nenvoy-a\n']);
  });
});

describe('runtime.lua and envoy/bootstrap.ts name the same state directory and files', () => {
  it('GIVEN no WS_STATE_DIR THEN both default to the one the pod mounts, and every file has the same name on both sides', () => {
    const env = { ...process.env };
    delete env.WS_STATE_DIR;
    const text = execFileSync(
      'luajit',
      [
        '-e',
        `package.path = "${LUA}/?.lua;${HARNESS}/?.lua;" .. package.path
local runtime = require("runtime")
io.write(require("json_out").encode({ dir = runtime.STATE_DIR, files = runtime.FILES }))`,
      ],
      { encoding: 'utf8', env },
    );
    expect(JSON.parse(text)).toEqual({ dir: STATE_DIR, files: STATE_FILES });
  });
});

describe('hosts.lua parse_file: the worker re-reads the host list file every hosts_cache_ms', () => {
  it('GIVEN the same host lines under a new written_ms THEN the previous list (the same table); a new line, a new list; a bad file, nil and why', () => {
    const out = lua(`local hosts = require("hosts")
local function file(list, ms, cluster) return hosts.format_file(list, cluster or "backend", ms) end
local a = hosts.parse_file(file({ "10.0.0.1:80", "10.0.0.2:80" }, 1000), "backend")
local b, written = hosts.parse_file(file({ "10.0.0.1:80", "10.0.0.2:80" }, 2000), "backend")
local c = hosts.parse_file(file({ "10.0.0.1:80", "10.0.0.3:80" }, 3000), "backend")
local d, why = hosts.parse_file(file({ "10.0.0.1:80", "10.0.0.3:80" }, 4000, "other"), "backend")
local e, why2 = hosts.parse_file((file({ "10.0.0.1:80" }, 5000):gsub("end 1", "end 2")), "backend")
out({ a == b, written, #c, c[2], c == a, d == nil, why, e == nil, why2 })`);
    expect(out).toEqual([true, 2000, 2, '10.0.0.3:80', false, true, 'not the host list of cluster backend', true, 'truncated']);
  });
});

describe('keys.lua view_id: the name of a host list in Redis', () => {
  it('16 hex digits that depend on the set of pods only: any order, the same id; one pod more or changed, another', () => {
    const out = lua(`local keys = require("keys")
local a = keys.view_id({ "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80" })
local b = keys.view_id({ "10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80" })
local c = keys.view_id({ "10.0.0.1:80", "10.0.0.2:80" })
local d = keys.view_id({ "10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80" })
local e = keys.view_id({ "10.0.0.1:80", "10.0.0.2:8", "0.0.0.3:80" })
local seen, clash = {}, 0
for i = 1, 20000 do
  local id = keys.view_id({ "10.0." .. math.floor(i / 256) .. "." .. (i % 256) .. ":80" })
  if seen[id] then clash = clash + 1 end
  seen[id] = true
end
out({ a:match("^%x+$") ~= nil and #a, a == b, a ~= c, a ~= d, a ~= e, clash })`);
    expect(out).toEqual([16, true, true, true, true, 0]);
  });
});
