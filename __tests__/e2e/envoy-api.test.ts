// What real Envoy does, the facts the design rests on (docs/filter.md): the stack's own
// bootstrap (envoy/bootstrap.ts) with a probe filter in place of filter.lua that records
// its events, sets the filter's metadata and pins the host a test names.
//  - the lease log has an entry at the 101, one per renew interval while a WebSocket is
//    open (quiet or not, on every worker), and one at every end, resets included;
//  - Envoy's own answer to a pinned host that refuses the connection or is unknown is a 503
//    marked by the local reply config (x-ws-local-reply: UF / UH) and logged with those
//    flags; a backend's own answer to an upgrade (a 403) is not marked;
//  - the stdout log keeps one line per stream (its end), not the periodic entries.
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import WebSocket from 'ws';
import { buildEnvoyBootstrap, envoyArgs, LEASE_LOG_FILE, LOCAL_REPLY_HEADER } from '../../envoy/bootstrap';
import { bootstrapToYaml } from '../../envoy/yaml';
import { EchoBackends, backendAddress } from '../../tools/rig/echo';
import { DEBIAN_LUA_ENV, envoyBinary } from '../../tools/rig/envoy-bin';
import { localLayout } from '../../tools/rig/rig';
import { rawRequest, statusOf, waitUntil } from './support';

jest.setTimeout(60000);

const BASE = 21600;
const LIVE = `127.0.1.1:${BASE + 2}`;
const REFUSING = `127.0.1.2:${BASE + 2}`; // killed by a test while Envoy still counts it healthy
const PROBE = `
local f = assert(io.open(os.getenv("PROBE_LOG"), "a"))
local function rec(s) f:write(s, "\\n") f:flush() end
function envoy_on_request(h)
  local id = h:headers():get("x-probe") or "?"
  local md = h:streamInfo():dynamicMetadata()
  md:set("ws.admission", "connection_id", "p|00|" .. id .. "|00")
  md:set("ws.admission", "pod", h:headers():get("x-pin") or "${LIVE}")
  md:set("ws.admission", "registered", "1")
  md:set("ws.admission", "lease", "held")
  h:setUpstreamOverrideHost(h:headers():get("x-pin") or "${LIVE}", true)
  rec(id .. " request")
end
function envoy_on_response(h)
  local id = h:streamInfo():dynamicMetadata():get("ws.admission").connection_id:match("^p|00|(.*)|00$")
  rec(id .. " response " .. h:headers():get(":status") .. " local-reply " .. (h:headers():get("${LOCAL_REPLY_HEADER}") or "-"))
end
`;

let dir: string;
let envoy: ChildProcess;
let backends: EchoBackends;
let url: string;
let port: number;
const stdoutLog = () => fs.readFileSync(path.join(dir, 'envoy.log'), 'utf8');
const events = (id: string) =>
  (fs.existsSync(path.join(dir, 'probe.log')) ? fs.readFileSync(path.join(dir, 'probe.log'), 'utf8') : '')
    .split('\n')
    .filter((l) => l.startsWith(id + ' '))
    .map((l) => l.slice(id.length + 1));
/** Lease log entries of one probe id: [type, status, flags, upstream]. */
const entries = (id: string) => {
  const f = path.join(localLayout(BASE, 0, dir).stateDir, LEASE_LOG_FILE);
  return (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '')
    .split('\n')
    .filter((l) => l.split(' ')[1] === `p|00|${id}|00`)
    .map((l) => {
      const [type, , , , status, flags, upstream] = l.split(' ');
      return [type, status, flags, upstream];
    });
};

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-envoy-api-'));
  const layout = localLayout(BASE, 0, dir);
  fs.mkdirSync(layout.luaDir);
  fs.mkdirSync(layout.stateDir);
  fs.writeFileSync(path.join(layout.luaDir, 'filter.lua'), PROBE);
  fs.writeFileSync(path.join(layout.luaDir, 'metrics.lua'), 'function envoy_on_request(h) end\n');
  const yaml = bootstrapToYaml(
    buildEnvoyBootstrap({
      backendHost: [backendAddress(0), backendAddress(1)],
      backendPort: BASE + 2,
      idleTimeoutSeconds: 30,
      maxStreamDurationSeconds: 60,
      renewIntervalSeconds: 1,
      layout,
    }),
  );
  fs.writeFileSync(path.join(dir, 'envoy.yaml'), yaml);
  backends = await EchoBackends.start([backendAddress(0), backendAddress(1)], BASE + 2);
  const log = fs.openSync(path.join(dir, 'envoy.log'), 'a');
  envoy = spawn(envoyBinary(), envoyArgs(path.join(dir, 'envoy.yaml'), 2), {
    env: { PATH: process.env.PATH, ...DEBIAN_LUA_ENV, PROBE_LOG: path.join(dir, 'probe.log') },
    stdio: ['ignore', log, log],
  });
  port = layout.publicPort;
  url = `ws://127.0.0.1:${port}/`;
  await waitUntil(
    async () => statusOf(await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nx-probe: warm\r\n\r\n', 500)) === 200,
    20000,
    'envoy to route',
  );
});

afterAll(async () => {
  envoy?.kill('SIGKILL');
  await backends?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function open(id: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { 'x-probe': id } });
    ws.once('message', () => resolve(ws)); // the backend's hello
    ws.once('error', reject);
  });
}

describe('the lease log: Envoy reports its open WebSockets itself', () => {
  it('an entry at the 101, one per renew interval while the socket is quiet, one at the end; no Lua runs after the response headers', async () => {
    const ws = await open('quiet');
    await new Promise((r) => setTimeout(r, 3300));
    ws.close(1000);
    await new Promise((r) => ws.once('close', r));
    await waitUntil(() => entries('quiet').some((e) => e[0] === 'DownstreamEnd'), 3000, 'the end entry');
    const types = entries('quiet').map((e) => e[0]);
    expect(types[0]).toBe('DownstreamTunnelSuccessfullyEstablished');
    expect(types[types.length - 1]).toBe('DownstreamEnd');
    const periodic = types.filter((t) => t === 'DownstreamPeriodic').length;
    expect(periodic).toBeGreaterThanOrEqual(3);
    expect(periodic).toBeLessThanOrEqual(4);
    expect(entries('quiet')[0]).toEqual(['DownstreamTunnelSuccessfullyEstablished', '101', '-', LIVE]);
    expect(events('quiet')).toEqual(['request', 'response 101 local-reply -']);
  });

  it('a client that drops the connection: an end entry too (a reset runs no filter code, but writes the log)', async () => {
    const ws = await open('drop');
    ws.terminate();
    await waitUntil(() => entries('drop').some((e) => e[0] === 'DownstreamEnd'), 3000, 'the end entry');
  });

  it('sockets on both workers each get their periodic entries', async () => {
    const socks = await Promise.all(Array.from({ length: 8 }, (_, i) => open(`w${i}`)));
    await new Promise((r) => setTimeout(r, 2300));
    for (let i = 0; i < 8; i++) expect(entries(`w${i}`).filter((e) => e[0] === 'DownstreamPeriodic').length).toBeGreaterThanOrEqual(2);
    for (const s of socks) s.terminate();
  });
});

describe("Envoy's own answer to a pinned host it cannot reach, and a backend's refusal", () => {
  const pinned = async (id: string, pin: string, path = '/') =>
    rawRequest(
      port,
      `GET ${path} HTTP/1.1\r\nHost: x\r\nx-probe: ${id}\r\nx-pin: ${pin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );

  it('refused connection (a backend that just died, still healthy to Envoy): 503 marked UF by the local reply config, the end entry flagged UF', async () => {
    await backends.kill(REFUSING);
    expect(statusOf(await pinned('refused', REFUSING))).toBe(503);
    await waitUntil(() => entries('refused').length > 0, 3000, 'the end entry');
    expect(entries('refused')).toEqual([['DownstreamEnd', '503', 'UF', REFUSING]]);
    expect(events('refused')).toEqual(['request', 'response 503 local-reply UF']);
  });

  it('a host not in the cluster: 503 marked and flagged UH', async () => {
    expect(statusOf(await pinned('unknown', '127.0.9.9:9'))).toBe(503);
    await waitUntil(() => entries('unknown').length > 0, 3000, 'the end entry');
    expect(entries('unknown')).toEqual([['DownstreamEnd', '503', 'UH', '-']]);
    expect(events('unknown')).toEqual(['request', 'response 503 local-reply UH']);
  });

  it("a backend's own refusal of an upgrade (403) is not marked, and the client never sees the marker", async () => {
    const r = await pinned('forbidden', LIVE, '/refuse');
    expect(statusOf(r)).toBe(403);
    expect(r.toLowerCase()).not.toContain(LOCAL_REPLY_HEADER);
    await waitUntil(() => events('forbidden').length === 2, 3000, 'the response');
    expect(events('forbidden')).toEqual(['request', 'response 403 local-reply -']);
    const refused = await pinned('unknown2', '127.0.9.9:9');
    expect(refused.toLowerCase()).toContain(`${LOCAL_REPLY_HEADER}: uh`); // the probe does not remove it; filter.lua does
  });
});

it('the stdout access log has one line per stream, at its end, none for the periodic entries', async () => {
  const ws = await open('stdout');
  await new Promise((r) => setTimeout(r, 2300));
  ws.terminate();
  await waitUntil(() => entries('stdout').some((e) => e[0] === 'DownstreamEnd'), 3000, 'the end entry');
  await new Promise((r) => setTimeout(r, 300));
  const lines = stdoutLog()
    .split('\n')
    .filter((l) => l.includes('"connection_id":"p|00|stdout|00"'));
  expect(lines).toHaveLength(1);
  expect(JSON.parse(lines[0])).toMatchObject({ status: 101, pod: LIVE });
});
