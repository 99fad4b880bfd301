// lua/envoy/drain_marker.lua: the preStop drain (lua/cli/drain.lua) writes it; the agent reads
// it to stop renewing this proxy's leases between the drain and SIGTERM.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { lua } from '../support/luajit';

describe('drain_marker.lua', () => {
  it('GIVEN a marker written after the reader started THEN active; one from before, from the future or too old THEN not', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-marker-'));
    const out = lua(
      `local runtime = require("runtime")
local marker = require("drain_marker")
local t = 100000
runtime.set_clock(function() return t end)
local r = { marker.active(0) }            -- none yet
marker.write(t, "envoy-a")
r[#r + 1] = marker.active(50000)          -- written after the reader started
r[#r + 1] = marker.active(150000)         -- written before it started (an earlier container of the pod)
t = 100000 + marker.MAX_AGE_MS
r[#r + 1] = marker.active(50000)          -- too old
t = 50000
r[#r + 1] = marker.active(0)              -- in the future (the clock was stepped back)
local f = io.open(runtime.path("draining"), "rb")
r[#r + 1] = f:read("*a")
f:close()
out(r)`,
      { env: { WS_STATE_DIR: dir } },
    );
    expect(out).toEqual([false, true, false, false, false, '100000\nenvoy-a\n']);
  });

  it('GIVEN a marker without a time THEN not active; GIVEN no state directory THEN write says why', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-marker-'));
    fs.writeFileSync(path.join(dir, 'draining'), 'draining\n');
    expect(lua(`out({ require("drain_marker").active(0) })`, { env: { WS_STATE_DIR: dir } })).toEqual([false]);
    expect(
      lua(`local ok, err = require("drain_marker").write(1, "p"); out({ ok = ok or false, err = err })`, {
        env: { WS_STATE_DIR: '/nonexistent/ws' },
      }),
    ).toEqual({
      ok: false,
      err: '/nonexistent/ws/draining: No such file or directory',
    });
  });
});
