// lua/envoy/worker_stats.lua: the public filter's per-worker counters, kept outside Redis in
// one file per worker under WS_STATE_DIR and read back by metrics.lua. The clock is driven.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { lua } from '../support/luajit';

const NAMES = [
  'redis_errors_total',
  'fail_open_total',
  'rejected_redis_unavailable_total',
  'rate_limited_cached_total',
  'capacity_cached_total',
  'rejected_recovering_total',
  'rejected_no_backend_total',
];

function run(dir: string, code: string): unknown {
  return lua(
    `local ws = require("worker_stats")
local t = 5000
local w = ws.writer(${JSON.stringify(dir)}, "envoy-a", "0a1b2c", function() return t end, 1000)
local function file() local f = io.open(${JSON.stringify(dir)} .. "/envoy-a.0a1b2c.counters", "rb"); if not f then return nil end
  local s = f:read("*a"); f:close(); return s end
${code}`,
  );
}

describe('worker_stats.lua', () => {
  it('GIVEN counts WHEN not urgent THEN written at most once per interval of its clock; urgent ones at once', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-stats-'));
    const out = run(
      dir,
      `local seen = {}
w:inc("rate_limited_cached_total")          -- the first write: nothing was written yet
seen[#seen + 1] = file() ~= nil
w:inc("rate_limited_cached_total")          -- within the interval: not yet
seen[#seen + 1] = file():match("rate_limited_cached_total (%d+)")
w:inc("redis_errors_total", 1, true)        -- urgent: at once, with the other pending count
seen[#seen + 1] = file():match("rate_limited_cached_total (%d+)") .. " " .. file():match("redis_errors_total (%d+)")
w:inc("capacity_cached_total")
t = t + 1000
w:maybe_flush()                             -- the interval has passed
seen[#seen + 1] = file():match("capacity_cached_total (%d+)")
out(seen)`,
    );
    expect(out).toEqual([true, '1', '2 1', '1']);
    expect(fs.readFileSync(path.join(dir, 'envoy-a.0a1b2c.counters'), 'utf8')).toBe(
      [
        'proxy envoy-a',
        'worker 0a1b2c',
        ...NAMES.map((n) => `${n} ${{ redis_errors_total: 1, rate_limited_cached_total: 2, capacity_cached_total: 1 }[n] ?? 0}`),
      ].join('\n') + '\n',
    );
    expect(fs.readFileSync(path.join(dir, 'workers.index'), 'utf8')).toBe('envoy-a.0a1b2c.counters\n'); // listed once
  });

  it('read_all: every worker listed in the index, sorted; unreadable, unlisted or malformed files skipped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-stats-'));
    fs.writeFileSync(path.join(dir, 'envoy-b.00ff00.counters'), 'proxy envoy-b\nworker 00ff00\nfail_open_total 3\n');
    fs.writeFileSync(path.join(dir, 'envoy-a.0000aa.counters'), 'proxy envoy-a\nworker 0000aa\nfail_open_total 1\nbad line here\n');
    fs.writeFileSync(path.join(dir, 'nameless.0000bb.counters'), 'fail_open_total 9\n');
    fs.writeFileSync(path.join(dir, 'unlisted.0000cc.counters'), 'proxy unlisted\nworker 0000cc\n');
    fs.writeFileSync(
      path.join(dir, 'workers.index'),
      [
        'envoy-b.00ff00.counters',
        'envoy-a.0000aa.counters',
        'envoy-a.0000aa.counters',
        'nameless.0000bb.counters',
        'gone.0000dd.counters',
        '../etc/passwd',
      ].join('\n'),
    );
    expect(lua(`out(require("worker_stats").read_all(${JSON.stringify(dir)}))`)).toEqual([
      { proxy: 'envoy-a', worker: '0000aa', counts: { fail_open_total: 1 } },
      { proxy: 'envoy-b', worker: '00ff00', counts: { fail_open_total: 3 } },
    ]);
    expect(lua(`out(require("worker_stats").read_all("/nonexistent"))`)).toEqual([]);
  });

  it('GIVEN a directory it cannot write THEN it counts write errors and the filter goes on', () => {
    expect(
      lua(`local w = require("worker_stats").writer("/nonexistent/ws", "p", "ab", function() return 0 end, 1000)
w:inc("fail_open_total", 1, true)
out(w.write_errors)`),
    ).toBe(1);
  });
});
