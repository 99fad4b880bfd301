// lua/envoy/resp.lua on its own, under LuaJIT + luasocket against a real redis-server.
import { execFileSync } from 'child_process';
import * as path from 'path';
import { startRedis, RedisServer } from '../support/redis-server';
import { ROOT } from './harness/worker';

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

/** Runs a Lua snippet with lua/envoy on package.path; returns its stdout. */
function lua(code: string): string {
  const prelude = `package.path = ${JSON.stringify(path.join(ROOT, 'lua/envoy') + '/?.lua;')} .. package.path\n`;
  return execFileSync('luajit', ['-e', prelude + code], { encoding: 'utf8', timeout: 20000 });
}

describe('resp.lua name resolution (blocking, unbounded by socket timeouts)', () => {
  it('resolves the Redis name once per worker: a reconnect reuses the address', () => {
    const out = lua(`
      local resp = require("resp")
      local c = resp.new({ host = "localhost", port = ${redis.port}, connect_timeout_ms = 200, read_timeout_ms = 200 })
      assert(c:call("CLIENT", "SETNAME", "resolve-test") == "OK")
      local id = c:call("CLIENT", "ID")
      local killer = resp.new({ host = "127.0.0.1", port = ${redis.port}, connect_timeout_ms = 200, read_timeout_ms = 200 })
      assert(killer:call("CLIENT", "KILL", "ID", tostring(id)) == 1)
      assert(c:call("PING") == "PONG")   -- stale socket noticed, reconnected
      print(c.connects .. " " .. c.resolves .. " " .. killer.resolves)
    `);
    expect(out.trim()).toBe('2 1 0'); // two connects, one lookup; an IP literal is never resolved
  });

  it('after failed connects, resolves again at most every few seconds', () => {
    const out = lua(`
      local resp = require("resp")
      local c = resp.new({ host = "localhost", port = 1, connect_timeout_ms = 50, read_timeout_ms = 50 })
      for i = 1, 5 do assert(c:call("PING") == nil) end
      print(c.resolves)
    `);
    expect(out.trim()).toBe('1');
  });
});

describe('resp.lua certificate name check', () => {
  it('matches subjectAltName names and IPs; a fully qualified "name." is the same name', () => {
    const out = lua(`
      local resp = require("resp")
      local cert = { extensions = function() return { ["2.5.29.17"] = {
        dNSName = { "ws-redis.ns.svc.cluster.local", "*.redis.test" }, iPAddress = { "10.0.0.9" } } } end }
      local function m(h) return resp.cert_matches(cert, h) and "y" or "n" end
      print(m("ws-redis.ns.svc.cluster.local") .. m("ws-redis.ns.svc.cluster.local.") .. m("WS-Redis.ns.svc.cluster.local")
        .. m("a.redis.test") .. m("a.b.redis.test") .. m("10.0.0.9") .. m("other.ns.svc.cluster.local"))
    `);
    expect(out.trim()).toBe('yyyynyn');
  });
});

describe('resp.lua read timeout', () => {
  it('never resends a command after a read timeout (the server may have run it: an admit would lease twice)', () => {
    // A script that counts its runs, then keeps Redis busy past the client's read timeout.
    const out = lua(`
      local resp = require("resp")
      local c = resp.new({ host = "127.0.0.1", port = ${redis.port}, connect_timeout_ms = 200, read_timeout_ms = 100 })
      assert(c:call("DEL", "resend-test") == 1 or true)
      local slow = "redis.call('INCR', KEYS[1]) local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
        .. "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - s > 400000 return 1"
      local r, err = c:call("EVAL", slow, "1", "resend-test")
      require("socket").sleep(0.8)
      local check = resp.new({ host = "127.0.0.1", port = ${redis.port}, connect_timeout_ms = 200, read_timeout_ms = 500 })
      print(tostring(r) .. " " .. tostring(err) .. " " .. tostring(check:call("GET", "resend-test")))
    `);
    expect(out.trim()).toBe('nil receive: timeout 1'); // run once, reported as a timeout
  });

  it('bounds a whole round trip, not each piece of a reply dribbled out slowly', async () => {
    // A fake Redis that answers any command with a 5-element array, one element every 150 ms.
    const net = await import('net');
    const { spawn } = await import('child_process');
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
    const port = (server.address() as { port: number }).port;
    try {
      const prelude = `package.path = ${JSON.stringify(path.join(ROOT, 'lua/envoy') + '/?.lua;')} .. package.path\n`;
      const code =
        prelude +
        `
        local socket = require("socket")
        local c = require("resp").new({ host = "127.0.0.1", port = ${port}, connect_timeout_ms = 200, read_timeout_ms = 200 })
        local t0 = socket.gettime()
        local r, err = c:call("PING")
        print(string.format("%d %s", (socket.gettime() - t0) * 1000, tostring(r == nil and err)))
      `;
      const out = await new Promise<string>((resolve) => {
        const p = spawn('luajit', ['-e', code]);
        let s = '';
        p.stdout.on('data', (d) => {
          s += d;
        });
        p.on('close', () => resolve(s)); // 'close': stdout drained ('exit' may come first)
      });
      const [ms, ...rest] = out.trim().split(' ');
      const err = rest.join(' ');
      expect(err).toMatch(/timeout/);
      // One 200 ms read timeout for the round trip (the retry on a fresh connection is
      // skipped: the connection was fresh), not 200 ms per element (~750 ms).
      expect(Number(ms)).toBeGreaterThanOrEqual(150);
      expect(Number(ms)).toBeLessThan(450);
    } finally {
      server.close();
    }
  });
});
