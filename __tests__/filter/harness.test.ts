// The harness itself (harness/envoy_api.lua, driver.lua, router.ts): its model of Envoy's
// Lua filter must match the real Envoy -- when request headers are passed on
// (StreamHandleWrapper start/onSuccess/onData in source/extensions/filters/http/lua/
// lua_filter.cc), what reaches envoy_on_response (recorded from Envoy 1.40), and the
// stack's own route and local reply config. Each difference from the real thing is a bug
// of the harness. A probe script records what it is given.
import * as fs from 'fs';
import * as path from 'path';
import { LOCAL_REPLY_HEADER } from '../../envoy/bootstrap';
import { luaFunctions } from '../support/lua-functions';
import { Worker, makeLuaDir, makeStateDir, defaultSettings, PLAIN, UPGRADE } from './harness/worker';

const PROBE = `
local function record(h, what)
  local list = {}
  for k, v in pairs(h:headers()) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  h:streamInfo():dynamicMetadata():set("probe", what, table.concat(list, " "))
end
function envoy_on_request(h)
  local mode = h:headers():get("x-mode")
  if mode == "call-then-chunks" or mode == "call-then-return" then
    h:httpCall("envoy_admin", { [":method"] = "GET", [":path"] = "/ready", [":authority"] = "a" }, nil, 100)
  end
  if mode == "respond" then h:respond({ [":status"] = "429", ["x-ws-admission"] = "rate_limited" }, "slow down\\n") end
  if mode == "call-then-return" or mode == "respond" or mode == "return" then return end
  for _ in h:bodyChunks() do
    if mode == "chunk-error" then error("boom") end
    if mode == "chunk-then-call" then
      h:httpCall("envoy_admin", { [":method"] = "GET", [":path"] = "/ready", [":authority"] = "a" }, nil, 100)
    end
  end
end
function envoy_on_response(h)
  record(h, "response")
  if h:headers():get("x-loop") then
    for _ in h:bodyChunks() do end
  end
end
`;

let w: Worker;
beforeAll(async () => {
  const dir = makeLuaDir({ ...defaultSettings(6379) });
  fs.writeFileSync(path.join(dir, 'probe.lua'), PROBE);
  w = await Worker.start({ luaDir: dir, stateDir: makeStateDir(), script: 'probe.lua' as 'filter.lua' });
});
afterAll(async () => {
  await w.close();
});

const req = (mode: string, base = PLAIN) => w.request([...base, ['x-mode', mode]]);
const seen = (r: { metadata?: Record<string, Record<string, unknown>> }) => r.metadata?.probe?.response as string;

describe('harness: when Envoy passes the request headers on', () => {
  it('GIVEN a script waiting in bodyChunks() right away THEN passed on (start() answers Continue)', async () => {
    const r = await req('chunks');
    expect(r.state).toBe('waiting_body');
    expect(r.passed).toBe(true);
    expect((await w.response(r.sid, '200')).state).toBe('done');
  });

  it('GIVEN httpCall() then return THEN passed on (onSuccess() calls continueIteration())', async () => {
    const r = await req('call-then-return');
    expect(r.state).toBe('done');
    expect(r.passed).toBe(true);
  });

  it('GIVEN httpCall() then bodyChunks() THEN held until the first data frame (onData() answers Continue)', async () => {
    const r = await req('call-then-chunks');
    expect(r.state).toBe('waiting_body');
    expect(r.passed).toBe(false);
    await expect(w.response(r.sid, '101')).rejects.toThrow(/never passed on to the router/);
    const d = await w.data(r.sid, 'request');
    expect(d.passed).toBe(true);
  });

  it('GIVEN a script error in one flow THEN both coroutines are dropped (Filter::scriptError resets both wrappers)', async () => {
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

  it('GIVEN an upgrade request THEN the waiting flow gets an empty chunk at once (as Envoy 1.40 does)', async () => {
    const r = await req('chunk-error', UPGRADE);
    expect(r.state).toBe('error'); // the request flow failed on its empty chunk, before any response
    const plain = await req('count');
    expect(plain.state).toBe('waiting_body'); // a plain request gets no chunk
  });

  it('GIVEN headers passed on THEN an httpCall() while streaming chunks does not hold them again', async () => {
    const r = await req('chunk-then-call');
    expect(r.passed).toBe(true);
    const d = await w.data(r.sid, 'request');
    expect(d.state).toBe('waiting_body');
    expect(d.passed).toBe(true);
  });
});

describe('harness: what reaches envoy_on_response', () => {
  it("GIVEN a plain request THEN the backend's answer carries the router's x-envoy-upstream-service-time", async () => {
    const r = await req('return');
    const resp = await w.response(r.sid, '200');
    expect(seen(resp)).toMatch(/(^| )x-envoy-upstream-service-time=\d+( |$)/);
  });

  it('GIVEN an upgrade request THEN no answer carries it, whatever the status (Envoy 1.40: the request never completes)', async () => {
    for (const status of ['101', '403', '500']) {
      const r = await req('return', UPGRADE);
      const resp = await w.response(r.sid, status);
      expect(seen(resp)).toBe(`:status=${status}`);
    }
  });

  it(`GIVEN the router's own reply THEN its 503 and body length, and the stack's ${LOCAL_REPLY_HEADER} with the response flags`, async () => {
    const r = await req('return', UPGRADE);
    const resp = await w.localReply(r.sid, 'UH');
    expect(seen(resp)).toBe(`:status=503 content-length=19 content-type=text/plain ${LOCAL_REPLY_HEADER}=UH`);
    const r2 = await req('return', UPGRADE);
    expect(seen(await w.localReply(r2.sid, 'UF'))).toMatch(
      new RegExp(`^:status=503 content-length=\\d+ content-type=text/plain ${LOCAL_REPLY_HEADER}=UF$`),
    );
  });

  it(`GIVEN a backend that sends ${LOCAL_REPLY_HEADER} itself THEN the route removes it before the filters see the answer`, async () => {
    const r = await req('return', UPGRADE);
    expect(seen(await w.response(r.sid, '403', [[LOCAL_REPLY_HEADER, 'UH']]))).toBe(':status=403');
  });

  it("GIVEN the script's own respond() THEN its reply goes through envoy_on_response too, with content-length and a default content-type", async () => {
    const r = await req('respond', UPGRADE);
    expect(r.state).toBe('responded');
    expect(seen(r)).toBe(':status=429 content-length=10 content-type=text/plain x-ws-admission=rate_limited');
    await expect(w.response(r.sid, '101')).rejects.toThrow(/answered this request itself/);
  });

  it('GIVEN an upgraded stream THEN it never ends normally: every end is a reset', async () => {
    const r = await req('return', UPGRADE);
    await w.response(r.sid, '101');
    await expect(w.end(r.sid, 'response')).rejects.toThrow('an upgraded HTTP/1.1 stream never ends normally in Envoy');
    await w.reset(r.sid);
  });
});

describe('harness code', () => {
  it('has no Lua function over 60 lines (issue 22)', () => {
    const dir = path.join(__dirname, 'harness');
    const long = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.lua'))
      .flatMap((f) => luaFunctions(fs.readFileSync(path.join(dir, f), 'utf8')).map((fn) => ({ file: f, ...fn })))
      .filter((fn) => fn.lines > 60);
    expect(long).toEqual([]);
  });

  it('the length check counts what it should (a function of 61 lines is one)', () => {
    const body = Array.from({ length: 59 }, (_, i) => `  local x${i} = ${i}`).join('\n');
    expect(luaFunctions(`local function f()\n${body}\nend\n`)).toEqual([{ name: 'f', line: 1, lines: 61 }]);
    expect(luaFunctions('function M.a() if x then for i = 1, 2 do end end end -- end\nlocal s = "end"')).toEqual([
      { name: 'M.a', line: 1, lines: 1 },
    ]);
  });
});
