// lua/envoy/runtime.lua: the process environment the pod's Lua programs share -- the state
// directory, the names of the files in it, and a clock the tests can drive.
import { STATE_DIR, STATE_FILES } from '../../envoy/bootstrap';
import { lua } from '../support/luajit';

describe('runtime.lua', () => {
  it('GIVEN a clock set by a test WHEN read THEN it is that clock; restored THEN the wall clock again', () => {
    const [driven, wall] = lua<[number[], number]>(`local runtime = require("runtime")
local t = 1000
runtime.set_clock(function() return t end)
local a = runtime.now_ms()
t = 5000
local b = runtime.now_ms()
runtime.set_clock(nil)
out({ { a, b }, runtime.now_ms() })`);
    expect(driven).toEqual([1000, 5000]);
    expect(Math.abs(wall - Date.now())).toBeLessThan(5000);
  });

  it('GIVEN no WS_STATE_DIR THEN the directory the pod mounts, and every file named as envoy/bootstrap.ts names it', () => {
    expect(lua(`local r = require("runtime"); out({ dir = r.STATE_DIR, files = r.FILES })`, { unset: ['WS_STATE_DIR'] })).toEqual({
      dir: STATE_DIR,
      files: STATE_FILES,
    });
  });

  it('GIVEN WS_STATE_DIR THEN path() puts each file there', () => {
    expect(lua(`out(require("runtime").path("snapshot"))`, { env: { WS_STATE_DIR: '/tmp/x' } })).toBe(`/tmp/x/${STATE_FILES.snapshot}`);
  });
});
