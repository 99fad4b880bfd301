// lua/envoy/admission.lua: every call of the ws_admission library as the Lua side builds it
// (the filter, the agent and the drain take them from here), and ws_admit's reply turned
// into a decision. The shapes are compared with the tests' own reading of the contract
// (__tests__/redis/support/functions.ts) and run against the real library.
import Redis from 'ioredis';
import { Functions, keysFor } from '../redis/support/functions';
import { useAdmissionRig } from '../support/admission-rig';
import { lua, luaAsync, luaString } from '../support/luajit';
import { defaultSettings, makeLuaDir } from './harness/worker';

const S = `{ hash_tag = "ws", rate_limit = 60, rate_window_ms = 60000, max_connections_per_pod = 2, lease_ttl_ms = 360000, penalty_ms = 15000, max_connections_per_client = 3, max_connections_per_client_percent = 50, rate_limit_per_client = 20 }`;
const K = keysFor('ws');

interface Call {
  fn: string;
  keys: string[];
  args: Array<string | number>;
}

describe('the calls (lua/redis/README.md)', () => {
  const calls = lua<Record<string, Call>>(`local A = require("admission").new(${S})
out({
  admit = A.admit("p|ab|1|cd"), admit_client = A.admit("p|ab|1|cd", "1.2.3.4:5"),
  leases = A.leases({ { "R", "p|ab|1|cd", "10.0.0.1:80" }, { "F", "p|ab|2|cd", "10.0.0.2:80" } }),
  claim = A.hosts("claim", "p"), add = A.hosts("add", "p", 3, { "10.0.0.1:80", "10.0.0.2:80" }), commit = A.hosts("commit", "p", 3),
  beat = A.beat("p", 3, true), beat_noslot = A.beat("p"),
  begin = A.recover("begin", "p", "e1", { "q", "r" }), done = A.recover("done", "p"),
  release_proxy = A.release_proxy("p", "0"), snapshot = A.snapshot(), request_rate = A.request_rate("p|ab|3|cd"),
})`);

  it("GIVEN the settings WHEN each call is built THEN its function, keys (all under {ws}) and arguments are the contract's", () => {
    expect(calls.admit).toEqual({
      fn: 'ws_admit',
      keys: [K.rate, K.stats, K.leases, K.load, K.reach, K.down, K.agents, K.inventory, K.clients, K.crate, K.crateT],
      args: [60, 60000, 2, 360000, 'p|ab|1|cd', 3, 50, 20],
    });
    expect(calls.admit_client.args).toEqual([60, 60000, 2, 360000, 'p|ab|1|cd', 3, 50, 20, '1.2.3.4:5']);
    expect(calls.leases).toEqual({
      fn: 'ws_leases',
      keys: [K.rate, K.leases, K.load, K.stats, K.reach, K.down, K.inventory, K.clients, K.crate, K.crateT],
      args: [360000, 15000, 'R', 'p|ab|1|cd', '10.0.0.1:80', 'F', 'p|ab|2|cd', '10.0.0.2:80'],
    });
    const hostsKeys = [K.agents, K.beats, K.reach, K.load, K.down];
    expect([calls.claim, calls.add, calls.commit]).toEqual([
      { fn: 'ws_hosts', keys: hostsKeys, args: ['claim', 'p'] },
      { fn: 'ws_hosts', keys: hostsKeys, args: ['add', 'p', 3, '10.0.0.1:80', '10.0.0.2:80'] },
      { fn: 'ws_hosts', keys: hostsKeys, args: ['commit', 'p', 3] },
    ]);
    const beatKeys = [K.stats, K.agents, K.beats, K.reach, K.load, K.down, K.recovery];
    expect([calls.beat, calls.beat_noslot]).toEqual([
      { fn: 'ws_beat', keys: beatKeys, args: ['p', 3, 1] },
      { fn: 'ws_beat', keys: beatKeys, args: ['p', '', 0] },
    ]);
    expect([calls.begin, calls.done]).toEqual([
      { fn: 'ws_recover', keys: [K.stats, K.recovery], args: ['begin', 'p', 'e1', 'q', 'r'] },
      { fn: 'ws_recover', keys: [K.stats, K.recovery], args: ['done', 'p'] },
    ]);
    expect(calls.release_proxy).toEqual({
      fn: 'ws_release_proxy',
      keys: [K.leases, K.load, K.stats, K.reach, K.down, K.inventory, K.clients],
      args: ['p', '0'],
    });
    expect(calls.snapshot).toEqual({
      fn: 'ws_snapshot',
      keys: [K.rate, K.stats, K.leases, K.load, K.reach, K.down, K.agents, K.beats, K.inventory, K.clients],
      args: [60000],
    });
    expect(calls.request_rate).toEqual({ fn: 'ws_request_rate', keys: [K.rateRequests, K.stats], args: [60, 60000, 'p|ab|3|cd'] });
  });

  it("the same key lists as the tests' Functions helper, function by function", () => {
    // (The helper is what the library's own tests call; a drift would let both pass apart.)
    const f = new Functions(undefined as unknown as Redis, 'ws'); // key lists only: no connection needed
    expect({
      admit: calls.admit.keys,
      leases: calls.leases.keys,
      hosts: calls.claim.keys,
      beat: calls.beat.keys,
      snapshot: calls.snapshot.keys,
    }).toEqual({ admit: f.admitKeys(), leases: f.leasesKeys(), hosts: f.hostsKeys(), beat: f.beatKeys(), snapshot: f.snapshotKeys() });
  });
});

describe('the calls against the real library, as the proxy user', () => {
  const rig = useAdmissionRig();

  it("GIVEN an agent's sequence built here (recover, hosts, beat, admit, leases, snapshot, release_proxy) THEN Redis accepts every call", async () => {
    const dir = makeLuaDir({ ...defaultSettings(rig.redis.port, { ...rig.credentials, rate_limit: 60 }) });
    const replies = await luaAsync<unknown[]>(`local loader = require("settings_loader")
local S = assert(loader.load(${luaString(dir + '/settings.lua')}))
local A = require("admission").new(S)
local c = require("resp").new(loader.redis_options(S))
local function run(e) local r = c:fcall(e.fn, e.keys, e.args); return type(r) == "table" and r.err or r end
local slot = run(A.hosts("claim", "envoy-x"))
out({
  run(A.recover("begin", "envoy-x", "e0e0e0e0e0e0e0e0")), run(A.recover("done", "envoy-x")), slot,
  run(A.hosts("add", "envoy-x", slot, { "10.0.0.1:80" })), run(A.hosts("commit", "envoy-x", slot)),
  run(A.beat("envoy-x", slot, false)), run(A.admit("envoy-x|ab|1|cd", "1.2.3.4:5")),
  run(A.leases({ { "R", "envoy-x|ab|1|cd", "10.0.0.1:80" } })), run(A.request_rate("envoy-x|ab|2|cd")),
  run(A.snapshot())[2], run(A.release_proxy("envoy-x", "0")),
})`);
    expect(replies).toEqual([
      [expect.any(String), 0],
      0,
      0,
      ['OK', 1],
      ['OK', 1],
      expect.arrayContaining([1]),
      ['ADMITTED', '10.0.0.1:80', 1, 0, 59],
      [1, 0, 0, 0],
      ['ALLOWED', 0, 59],
      1,
      ['0', 1],
    ]);
  });
});

describe("decide: ws_admit's reply as a decision", () => {
  it.each([
    ['an admission', `{ "ADMITTED", "10.0.0.1:80", 1, 0, 59 }`, { status: 'ADMITTED', pod: '10.0.0.1:80' }],
    ['a rate limit refusal', `{ "RATE_LIMITED", "", 0, 1234, 0 }`, { status: 'RATE_LIMITED', retry_ms: 1234 }],
    ["a client's limit", `{ "CLIENT", "", 0, 2500, 40 }`, { status: 'CLIENT', retry_ms: 2500 }],
    ['a full refusal (its wait capped)', `{ "FULL", "", 0, 90000, 10 }`, { status: 'FULL', retry_ms: 5000 }],
    ['a full refusal with no lease to wait for', `{ "FULL", "", 0, 0, 10 }`, { status: 'FULL', retry_ms: 1000 }],
    ['no hosts for this proxy', `{ "NOHOSTS", "", 0, 0, 10 }`, { status: 'NOHOSTS' }],
    ['a recovery under way', `{ "RECOVERING", "", 0, 8500, 0 }`, { status: 'RECOVERING', retry_ms: 8500 }],
    ['a recovery with no wait given', `{ "RECOVERING", "", 0, 0, 0 }`, { status: 'RECOVERING', retry_ms: 1 }],
  ])('GIVEN %s THEN %j', (_what, reply, decision) => {
    expect(lua(`out(require("admission").decide(${reply}, 5000))`)).toEqual(decision);
  });

  it('GIVEN a reply ws_admit never gives THEN nil (the filter fails per failure_mode)', () => {
    expect(
      lua(`local A = require("admission")
out({ A.decide({ "ADMITTED" }, 5000) == nil, A.decide("OK", 5000) == nil, A.decide({ "MAYBE", "", 0, 0, 0 }, 5000) == nil,
  A.decide(nil, 5000) == nil, A.decide({ "ADMITTED", 7 }, 5000) == nil })`),
    ).toEqual([true, true, true, true, true]);
  });
});
