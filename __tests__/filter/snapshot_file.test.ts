// lua/envoy/snapshot_file.lua: the metrics snapshot the agent writes and metrics.lua serves.
// The reader trusts nothing in the file: header and end, names and pods are checked, and
// a file older than its bound counts as Redis unavailable.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { lua, luaString } from '../support/luajit';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-snapshot-'));
const file = path.join(dir, 'metrics.snapshot');
const NOW = 1_800_000_000_000;

const SNAP = `{ redis_up = true, window_used = 7, stats = { admitted = 12, released = 4 },
  pods = { { "10.0.0.2:8080", 1 }, { "10.0.0.1:8080", 2 } }, proxies = { { "envoy-b", 1 }, { "envoy-a", 2 } },
  gauges = { pods_reachable = 3, recovering = 0 } }`;

/** Reads `file` at NOW with a bound of 17 s: the snapshot, or { why }. */
function read(): unknown {
  return lua(`local snap, why = require("snapshot_file").read(${luaString(file)}, ${NOW}, 17000)
out(snap or { why = why })`);
}

describe('format, write and read back', () => {
  it('GIVEN a snapshot WHEN written and read THEN the same numbers, pods and proxies sorted', () => {
    lua(`local f = require("snapshot_file"); assert(f.write(${luaString(file)}, f.format(${SNAP}, ${NOW - 1000})))`);
    expect(fs.existsSync(`${file}.tmp`)).toBe(false); // written to a temporary name, then renamed
    expect(read()).toEqual({
      redis_up: true,
      written_ms: NOW - 1000,
      window_used: 7,
      stats: { admitted: 12, released: 4 },
      pods: [
        ['10.0.0.1:8080', 2],
        ['10.0.0.2:8080', 1],
      ],
      proxies: [
        ['envoy-a', 2],
        ['envoy-b', 1],
      ],
      gauges: { pods_reachable: 3, recovering: 0 },
    });
  });

  it('GIVEN the agent\'s "Redis unavailable" THEN nil and its error (one line, control characters made blanks)', () => {
    lua(`local f = require("snapshot_file")
assert(f.write(${luaString(file)}, f.format({ redis_up = false, error = "connect: refused\\nagain" }, ${NOW})))`);
    expect(fs.readFileSync(file, 'utf8')).toBe(
      `ws-admission-snapshot 1\nwritten_ms ${NOW}\nredis_up 0\nerror connect: refused again\nend\n`,
    );
    expect(read()).toEqual({ why: 'connect: refused again' });
  });
});

describe('what the reader refuses', () => {
  const write = (lines: string[]) => fs.writeFileSync(file, lines.join('\n') + '\n');
  const good = (written: number, body: string[] = []) => ['ws-admission-snapshot 1', `written_ms ${written}`, 'redis_up 1', ...body, 'end'];

  it.each([
    ['no file', () => fs.rmSync(file, { force: true }), /^no snapshot yet \(/],
    ['a wrong header', () => write(['ws-admission-snapshot 2', `written_ms ${NOW}`, 'redis_up 1', 'end']), /^malformed snapshot /],
    ['no end (a torn write)', () => write(good(NOW).slice(0, -1)), /^malformed snapshot /],
    ['no time', () => write(['ws-admission-snapshot 1', 'written_ms soon', 'redis_up 1', 'end']), /^malformed snapshot /],
    [
      'older than the bound',
      () => write(good(NOW - 17001)),
      /^snapshot 17001 ms old \(the agent writes one every few seconds; is it running\?\)$/,
    ],
    ['from the future (over 5 s)', () => write(good(NOW + 5001)), /^snapshot -5001 ms old/],
  ] as Array<[string, () => void, RegExp]>)('GIVEN %s THEN nil and why', (_what, make, why) => {
    make();
    expect(read()).toEqual({ why: expect.stringMatching(why) });
  });

  it('GIVEN hostile lines THEN each is skipped: a pod that is no ip:port, names with other characters, no number', () => {
    write(
      good(NOW, [
        'window_used 2',
        'pod 10.0.0.1:8080 2',
        'pod evil}:{ws}:stats 9',
        'pod 10.0.0.2:8080 many',
        'proxy ev"il 1',
        'proxy envoy-a 2',
        'stat admitted 5',
        'stat ad\\mitted 6',
        'gauge recovering 0',
        'anything else',
      ]),
    );
    expect(read()).toMatchObject({
      window_used: 2,
      pods: [['10.0.0.1:8080', 2]],
      proxies: [['envoy-a', 2]],
      stats: { admitted: 5 },
      gauges: { recovering: 0 },
    });
  });

  it('GIVEN more pods than MAX_PODS THEN at most MAX_PODS are written and read', () => {
    const n = lua<number>(`local f = require("snapshot_file")
local pods = {}
for i = 1, f.MAX_PODS + 5 do pods[i] = { "10." .. math.floor(i / 65536) .. "." .. math.floor(i / 256) % 256 .. "." .. i % 256 .. ":80", 1 } end
assert(f.write(${luaString(file)}, f.format({ redis_up = true, window_used = 0, stats = {}, pods = pods, proxies = {}, gauges = {} }, ${NOW})))
local snap = assert(f.read(${luaString(file)}, ${NOW}, 17000))
out(#snap.pods)`);
    expect(n).toBe(10000);
  });
});
