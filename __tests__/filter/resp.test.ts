// lua/envoy/resp.lua on its own (the RESP2 client of every worker, the agent and the drain),
// under LuaJIT + luasocket against a real redis-server with the stack's ACL and the
// ws_admission library: FCALL entries, AUTH as an ACL user, timeouts, name resolution.
import * as net from 'net';
import { loadLibrary } from '../redis/support/functions';
import { RedisServer, startRedis } from '../../tools/rig/redis-server';
import { lua, luaAsync, luaString } from '../support/luajit';
import Redis from 'ioredis';

let redis: RedisServer;
let admin: Redis;
beforeAll(async () => {
  redis = await startRedis({ acl: { hashTag: 'ws' } });
  const a = redis.users!.admin;
  admin = new Redis({ port: redis.port, host: redis.host, username: a.name, password: a.password, lazyConnect: true });
  await admin.connect();
  await loadLibrary(admin);
});
afterAll(async () => {
  admin.disconnect();
  await redis.stop();
});

/** A resp.lua client as `who` (the proxies' or the admin's ACL user), as a Lua expression. */
function client(who: 'proxy' | 'admin', extra = ''): string {
  const u = redis.users![who];
  return `require("resp").new({ host = "127.0.0.1", port = ${redis.port}, username = "${u.name}", password_file = ${luaString(
    u.passwordFile,
  )}, connect_timeout_ms = 500, read_timeout_ms = 500${extra} })`;
}

describe('FCALL of the ws_admission library', () => {
  it('GIVEN entries {fn, keys, args} and raw commands in one run() THEN their replies in order', async () => {
    const r = lua(`local c = ${client('proxy')}
local replies = c:run({
  { fn = "ws_admit", keys = { "{ws}:rate", "{ws}:stats", "{ws}:leases", "{ws}:load", "{ws}:reach", "{ws}:down", "{ws}:agents",
      "{ws}:inventory", "{ws}:clients", "{ws}:crate", "{ws}:crate:t" },
    args = { 0, 60000, 2, 30000, "envoy-a|abcdef|1|abcdef", 0, 0, 0 } },
  { "PING" },
  { fn = "ws_request_rate", keys = { "{ws}:rate:requests", "{ws}:stats" }, args = { 5, 60000, "envoy-a|abcdef|2|abcdef" } },
})
out({ replies = replies, fcall = c:fcall("ws_request_rate", { "{ws}:rate:requests", "{ws}:stats" }, { 5, 60000, "envoy-a|abcdef|3|abcdef" }) })`);
    expect(r).toEqual({
      replies: [['RECOVERING', '', 0, 1000, 0], 'PONG', ['ALLOWED', 0, 4]], // no epoch in this Redis: nothing is admitted
      fcall: ['ALLOWED', 0, 3],
    });
  });

  it('GIVEN a function error THEN an error reply value (not a transport failure); a missing library says what to do', () => {
    const r = lua(`local resp = require("resp")
local c = ${client('proxy')}
local bad = c:fcall("ws_admit", { "{ws}:rate" }, { 1 })
local missing = c:fcall("ws_nothing", {}, {})
out({ resp.is_error(bad), bad.err, resp.is_error(missing), missing.err, c.connects })`);
    expect(r).toEqual([
      true,
      expect.stringMatching(/^ERR ws_admit: /),
      true,
      expect.stringMatching(
        /^ERR Function not found \(the ws_admission library is not loaded in this Redis: an administrator loads it, FUNCTION LOAD REPLACE of lua\/redis\/ws_admission\.lua; docs\/operations\.md\)$/,
      ),
      1, // the connection survived both
    ]);
  });

  it('GIVEN the proxy ACL THEN no Lua of its own: EVAL, SCRIPT and FUNCTION are refused (NOPERM), FCALL and PING pass', () => {
    const r = lua(`local c = ${client('proxy')}
local function e(v) return type(v) == "table" and v.err and v.err:match("^(%u+)") or v end
out({ e(c:call("EVAL", "return 1", "0")), e(c:call("SCRIPT", "LOAD", "return 1")), e(c:call("FUNCTION", "FLUSH")),
  e(c:call("KEYS", "*")), e(c:call("GET", "other:key")), e(c:call("PING")) })`);
    expect(r).toEqual(['NOPERM', 'NOPERM', 'NOPERM', 'NOPERM', 'NOPERM', 'PONG']);
  });
});

describe('AUTH', () => {
  it('GIVEN the ACL user and its password file (ending in a newline, as a Secret) THEN connected; a wrong password, a missing file: clear errors', () => {
    const r = lua(`local resp = require("resp")
local ok = ${client('proxy')}
local wrong = resp.new({ host = "127.0.0.1", port = ${redis.port}, username = "ws-proxy", password_file = "/dev/null", connect_timeout_ms = 500, read_timeout_ms = 500 })
local nofile = resp.new({ host = "127.0.0.1", port = ${redis.port}, password_file = "/nonexistent/password", connect_timeout_ms = 500, read_timeout_ms = 500 })
local nouser = resp.new({ host = "127.0.0.1", port = ${redis.port}, password_file = ${luaString(redis.users!.proxy.passwordFile)}, connect_timeout_ms = 500, read_timeout_ms = 500 })
out({ ok:call("PING"), select(2, wrong:call("PING")), select(2, nofile:call("PING")), select(2, nouser:call("PING")) })`);
    expect(r).toEqual([
      'PONG',
      expect.stringMatching(/^AUTH failed: WRONGPASS/),
      expect.stringMatching(/^cannot read redis_password_file \/nonexistent\/password: /),
      expect.stringMatching(/^AUTH failed: WRONGPASS/), // AUTH <password> is the `default` user, which is off
    ]);
  });
});

describe('arguments', () => {
  it('encodes integers without exponent, other numbers exactly, booleans as 1/0; refuses a table', () => {
    const r = lua(`local resp = require("resp")
local ok, err = pcall(resp.encode, { "X", {} })
out({ resp.encode({ "SET", 1e15, 0.1, true, false, -3 }), ok, tostring(err):match("cannot send a table argument") ~= nil })`);
    expect(r).toEqual([
      '*6\r\n$3\r\nSET\r\n$16\r\n1000000000000000\r\n$19\r\n0.10000000000000001\r\n$1\r\n1\r\n$1\r\n0\r\n$2\r\n-3\r\n',
      false,
      true,
    ]);
  });
});

describe('name resolution (blocking, unbounded by socket timeouts)', () => {
  it('resolves the Redis name once per worker: a reconnect after a stale connection reuses the address', () => {
    const out = lua(`local c = ${client('admin').replace('"127.0.0.1"', '"localhost"')}
assert(c:call("CLIENT", "SETNAME", "resolve-test") == "OK")
local id = c:call("CLIENT", "ID")
local killer = ${client('admin')}
assert(killer:call("CLIENT", "KILL", "ID", tostring(id)) == 1)
assert(c:call("PING") == "PONG") -- stale socket noticed, reconnected (resent once: it cannot have run)
out({ c.connects, c.resolves, killer.resolves })`);
    expect(out).toEqual([2, 1, 0]); // two connects, one lookup; an IP literal is never resolved
  });

  it('after failed connects, resolves again at most every few seconds', () => {
    const out = lua(`local c = require("resp").new({ host = "localhost", port = 1, connect_timeout_ms = 50, read_timeout_ms = 50 })
for _ = 1, 5 do assert(c:call("PING") == nil) end
out(c.resolves)`);
    expect(out).toBe(1);
  });
});

describe('certificate name check (TLS: resp.tls.test.ts)', () => {
  it('matches subjectAltName names and IPs; a fully qualified "name." is the same name; a wildcard covers one label', () => {
    const out = lua(`local resp = require("resp")
local cert = { extensions = function() return { ["2.5.29.17"] = {
  dNSName = { "ws-redis.ns.svc.cluster.local", "*.redis.test" }, iPAddress = { "10.0.0.9" } } } end }
local function m(h) return resp.cert_matches(cert, h) and "y" or "n" end
out(m("ws-redis.ns.svc.cluster.local") .. m("ws-redis.ns.svc.cluster.local.") .. m("WS-Redis.ns.svc.cluster.local")
  .. m("a.redis.test") .. m("a.b.redis.test") .. m("10.0.0.9") .. m("other.ns.svc.cluster.local"))`);
    expect(out).toBe('yyyynyn');
  });
});

describe('read timeout', () => {
  it('never resends a command after a read timeout (the server may have run it: an admission would lease twice)', () => {
    // A script (run as the admin) that counts its runs, then keeps Redis busy past the client's read timeout.
    const out = lua(`local c = ${client('admin', ', read_timeout_ms = 100')}
c:call("DEL", "resend-test")
local slow = "redis.call('INCR', KEYS[1]) local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
  .. "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - s > 400000 return 1"
local r, err = c:call("EVAL", slow, "1", "resend-test")
require("socket").sleep(0.8)
out({ r == nil, err, ${client('admin')}:call("GET", "resend-test") })`);
    expect(out).toEqual([true, 'receive: timeout', '1']); // run once, reported as a timeout
  });

  it('bounds a whole round trip, not each piece of a reply dribbled out slowly', async () => {
    // A fake Redis that answers any command with a 5-element array, one element every 150 ms.
    const server = net.createServer((sock) => {
      sock.once('data', () => {
        const parts = ['*5\r\n', ':1\r\n', ':2\r\n', ':3\r\n', ':4\r\n', ':5\r\n'];
        let i = 0;
        const tick = () => {
          if (i < parts.length && !sock.destroyed) {
            sock.write(parts[i++]);
            setTimeout(tick, 150);
          }
        };
        tick();
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const [ms, err] = await luaAsync<[number, string]>(`local socket = require("socket")
local c = require("resp").new({ host = "127.0.0.1", port = ${port}, connect_timeout_ms = 200, read_timeout_ms = 200 })
local t0 = socket.gettime()
local r, err = c:call("PING")
out({ math.floor((socket.gettime() - t0) * 1000), r == nil and err })`);
      expect(err).toMatch(/timeout/);
      // One 200 ms read timeout for the round trip (no retry: the connection was fresh),
      // not 200 ms per element (~750 ms).
      expect(ms).toBeGreaterThanOrEqual(150);
      expect(ms).toBeLessThan(600);
    } finally {
      server.close();
    }
  });
});
