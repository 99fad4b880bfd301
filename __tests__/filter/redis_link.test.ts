// lua/envoy/redis_link.lua: a worker's link to Redis. Every Redis call of the public filter
// goes through run(): a failure (transport, or a function's error reply) is counted, logged
// and followed by BACKOFF_MS without any Redis call, so a Redis that is down costs each
// worker one bounded stall per back-off, never one per request. The clock is driven.
import * as net from 'net';
import { useAdmissionRig } from '../support/admission-rig';
import { freePort } from '../../tools/rig/redis-server';
import { luaAsync, luaString } from '../support/luajit';
import { defaultSettings, makeLuaDir } from './harness/worker';

const rig = useAdmissionRig();

/**
 * A link on the settings of `port`, a fake stats and log, a driven clock `t`; `steps` is Lua
 * run with them (`link`, `stats`, `logs`, `t`, `admit`), whose result is `out()`.
 */
function withLink(port: number, steps: string): Promise<unknown> {
  const dir = makeLuaDir({ ...defaultSettings(port, { ...rig.credentials, redis_read_timeout_ms: 300 }) });
  return luaAsync(`local S = assert(require("settings_loader").load(${luaString(dir + '/settings.lua')}))
local t = 1000000
local counted, logs = {}, {}
local stats = { inc = function(_, name, by, urgent) counted[#counted + 1] = { name, by or 1, urgent or false } end }
local function log(_, kind, level, msg) logs[#logs + 1] = { kind, level, msg } end
local link = require("redis_link").new(S, stats, log, function() return t end)
local admit = { require("admission").new(S).admit("envoy-test-0|abcdef|1|abcdef") }
local function step() ${steps} end
local r = step()
out({ r = r, counted = counted, logs = logs })`);
}

/** A server that accepts and closes at once; counts connections. */
async function closingServer(): Promise<{ port: number; count: () => number; stop: () => Promise<void> }> {
  let n = 0;
  const srv = net.createServer((s) => {
    n += 1;
    s.destroy();
  });
  const port = await freePort();
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
  return { port, count: () => n, stop: () => new Promise<void>((r) => srv.close(() => r())) };
}

describe('redis_link.lua', () => {
  it('GIVEN Redis answering THEN run() returns the replies, counts nothing, and is not backing off', async () => {
    await rig.f.reach('envoy-test-0', ['10.0.0.1:8080']);
    const r = await withLink(
      rig.redis.port,
      `local replies = link:run(nil, "admit", admit)
return { replies = replies, backing_off = link:backing_off() }`,
    );
    expect(r).toEqual({ r: { replies: [['ADMITTED', '10.0.0.1:8080', 1, 0, -1]], backing_off: false }, counted: [], logs: [] });
  });

  it("GIVEN a function's error reply THEN nil (not 'maybe ran'), one redis_errors_total (urgent), one warning, and the back-off", async () => {
    const r = await withLink(
      rig.redis.port,
      `local bad = { { fn = "ws_admit", keys = {}, args = {} } }
local a, maybe = link:run(nil, "admit", bad)
return { a == nil, maybe == nil, link:backing_off() }`,
    );
    expect(r).toEqual({
      r: [true, true, true],
      counted: [['redis_errors_total', 1, true]],
      logs: [['redis', 'warn', expect.stringMatching(/^ws-admission: redis admit failed: ERR ws_admit: /)]],
    });
  });

  it('GIVEN a transport failure THEN nil and "maybe ran"; no call until BACKOFF_MS has passed on its clock, then one', async () => {
    const srv = await closingServer();
    try {
      const r = await withLink(
        srv.port,
        `local seen = {}
local _, maybe = link:run(nil, "admit", admit)
seen[#seen + 1] = maybe
for _ = 1, 10 do assert(link:run(nil, "admit", admit) == nil) end   -- backing off: no call
t = t + require("redis_link").BACKOFF_MS - 1
assert(link:run(nil, "admit", admit) == nil)
seen[#seen + 1] = link:backing_off()
t = t + 1
link:run(nil, "admit", admit)                                         -- over: one more attempt
seen[#seen + 1] = link:backing_off()
return seen`,
      );
      expect(r).toMatchObject({
        r: [true, true, true],
        counted: [
          ['redis_errors_total', 1, true],
          ['redis_errors_total', 1, true],
        ],
      });
      expect(srv.count()).toBe(2);
    } finally {
      await srv.stop();
    }
  });
});
