// lua/envoy/upgrade.lua: what a request is, as Envoy's HTTP connection manager sees it.
// Pure functions of the headers, run on plain tables (the flow through the filter, with
// hostile values, is filter.hostile.test.ts).
import { lua, luaString } from '../support/luajit';

/**
 * A header object as the filter gets it: get() joins repeated names with ",", remove(), and
 * pairs() through __pairs (Envoy's LuaJIT honours it; Debian's needs the 5.2 form given).
 */
const HEADERS = `pairs = function(t)
  local mt = getmetatable(t)
  if mt and mt.__pairs then return mt.__pairs(t) end
  return next, t, nil
end
local function headers(list)
  local h = { list = list, removed = {} }
  function h:get(k)
    local vals = {}
    for _, kv in ipairs(self.list) do if kv[1] == k then vals[#vals + 1] = kv[2] end end
    return #vals > 0 and table.concat(vals, ",") or nil
  end
  function h:remove(k) self.removed[#self.removed + 1] = k end
  return setmetatable(h, { __pairs = function(t)
    local i = 0
    return function() i = i + 1; local kv = t.list[i]; if kv then return kv[1], kv[2] end end
  end })
end
`;
const list = (hs: Array<[string, string]>) => `{ ${hs.map(([k, v]) => `{ ${luaString(k)}, ${luaString(v)} }`).join(', ')} }`;

describe('has_token: one element of a comma-separated header value, any case, blanks around it', () => {
  it.each([
    ['Upgrade', true],
    ['keep-alive, Upgrade', true],
    [' keep-alive ,\tUPGRADE ', true],
    ['upgrade,', true],
    ['upgrades', false],
    ['x-upgrade, keep-alive', false],
    ['up grade', false],
    ['', false],
  ])('has_token(%j, "upgrade") = %j', (value, want) => {
    expect(lua(`out({ require("upgrade").has_token(${luaString(value)}, "upgrade") })`)).toEqual([want]);
  });

  it('GIVEN no value THEN false', () => {
    expect(lua(`out({ require("upgrade").has_token(nil, "upgrade") })`)).toEqual([false]);
  });
});

describe('websocket_kind', () => {
  it.each([
    [
      'an HTTP/1.1 upgrade',
      [
        ['connection', 'Upgrade'],
        ['upgrade', 'websocket'],
      ],
      'h1',
    ],
    [
      'repeated Connection headers',
      [
        ['connection', 'keep-alive'],
        ['connection', 'upgrade'],
        ['upgrade', 'WebSocket'],
      ],
      'h1',
    ],
    [
      'an HTTP/2 extended CONNECT as it would be raw',
      [
        [':method', 'CONNECT'],
        [':protocol', 'websocket'],
      ],
      'h2',
    ],
    ['Upgrade without the Connection token', [['upgrade', 'websocket']], null],
    [
      'another protocol',
      [
        ['connection', 'upgrade'],
        ['upgrade', 'h2c'],
      ],
      null,
    ],
    ['CONNECT without :protocol', [[':method', 'CONNECT']], null],
  ] as Array<[string, Array<[string, string]>, string | null]>)('GIVEN %s THEN %j', (_what, hs, want) => {
    expect(lua(`${HEADERS}out({ kind = require("upgrade").websocket_kind(headers(${list(hs)})) })`)).toEqual(want ? { kind: want } : []);
  });
});

describe('strip_internal: the headers no client may send', () => {
  it('GIVEN x-ws-* in any case and x-envoy-original-dst-host THEN each is removed, after the iteration; others are kept', () => {
    const removed = lua(`${HEADERS}local h = headers(${list([
      ['X-WS-Pod', '1'],
      ['x-ws-admission', '2'],
      ['x-envoy-original-dst-host', '3'],
      ['x-wsx', '4'],
      ['x-pod', '5'],
    ])})
require("upgrade").strip_internal(h)
out(h.removed)`);
    expect(removed).toEqual(['X-WS-Pod', 'x-ws-admission', 'x-envoy-original-dst-host']);
  });
});
