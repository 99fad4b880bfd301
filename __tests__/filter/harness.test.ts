// The harness itself: its model of when Envoy passes request headers on (and so whether
// an upgrade reaches the router at all) must match StreamHandleWrapper in
// source/extensions/filters/http/lua/lua_filter.cc -- start(), onSuccess(), onData().
import * as fs from 'fs';
import * as path from 'path';
import { Worker, makeLuaDir, makeStateDir, defaultSettings, PLAIN, HOSTS, UPGRADE } from './harness/worker';

const SCRIPT = `
function envoy_on_request(h)
  local mode = h:headers():get("x-mode")
  if mode == "call-then-chunks" or mode == "call-then-return" then
    h:httpCall("envoy_admin", { [":method"] = "GET", [":path"] = "/clusters", [":authority"] = "a" }, nil, 100)
  end
  if mode == "call-then-return" then return end
  for _ in h:bodyChunks() do
    if mode == "chunk-error" then error("boom") end
    if mode == "chunk-then-call" then
      h:httpCall("envoy_admin", { [":method"] = "GET", [":path"] = "/clusters", [":authority"] = "a" }, nil, 100)
    end
  end
end
function envoy_on_response(h)
  if h:headers():get("x-loop") then
    for _ in h:bodyChunks() do end
  end
end
`;

let w: Worker;
beforeAll(async () => {
  const dir = makeLuaDir({ ...defaultSettings(6379) });
  fs.writeFileSync(path.join(dir, 'probe.lua'), SCRIPT);
  w = await Worker.start({ luaDir: dir, stateDir: makeStateDir(), script: 'probe.lua' as 'filter.lua', hosts: HOSTS });
});
afterAll(async () => {
  await w.close();
});

const req = (mode: string) => w.request([...PLAIN, ['x-mode', mode]]);

describe('harness: when Envoy passes the request headers on', () => {
  it('waiting in bodyChunks() right away: passed on (start() answers Continue)', async () => {
    const r = await req('chunks');
    expect(r.state).toBe('waiting_body');
    expect(r.passed).toBe(true);
    expect((await w.response(r.sid, '200')).state).toBe('done');
  });

  it('httpCall() then return: passed on (onSuccess() calls continueIteration())', async () => {
    const r = await req('call-then-return');
    expect(r.state).toBe('done');
    expect(r.passed).toBe(true);
  });

  it('httpCall() then bodyChunks(): held until the first data frame (onData() answers Continue)', async () => {
    const r = await req('call-then-chunks');
    expect(r.state).toBe('waiting_body');
    expect(r.passed).toBe(false);
    await expect(w.response(r.sid, '101')).rejects.toThrow(/never passed on to the router/);
    const d = await w.data(r.sid, 'request');
    expect(d.passed).toBe(true);
  });

  it('a script error in one flow drops both coroutines (Filter::scriptError resets both wrappers)', async () => {
    const r = await req('chunk-error');
    // A 200 with a streamed body (a 101 would hand both flows an empty chunk at once, as
    // real Envoy does, and the request flow would fail on that one).
    const resp = await w.response(r.sid, '200', [['x-loop', '1']]);
    expect(resp.state).toBe('waiting_body');
    const d = await w.data(r.sid, 'request');
    expect(d.state).toBe('error');
    const after = await w.data(r.sid, 'response');
    expect(after.state).toBe('error');
    expect(after.error).toMatch(/dropped by a script error in the request flow/);
  });

  it('an upgrade request hands the waiting flow an empty chunk at once, and a 101 the response flow (as Envoy 1.40 does)', async () => {
    const r = await w.request([...UPGRADE, ['x-mode', 'chunk-error']]);
    // The request flow failed on its empty chunk, before any response.
    expect(r.state).toBe('error');
    const plain = await w.request([...PLAIN, ['x-mode', 'count']]);
    expect(plain.state).toBe('waiting_body');
  });

  it('httpCall() while streaming chunks does not un-pass headers already passed', async () => {
    const r = await req('chunk-then-call');
    expect(r.passed).toBe(true);
    const d = await w.data(r.sid, 'request');
    expect(d.state).toBe('waiting_body');
    expect(d.passed).toBe(true);
  });
});
