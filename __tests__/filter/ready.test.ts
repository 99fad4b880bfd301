// lua/envoy/ready.lua, answered from the metrics listener's filter (metrics.lua): the kubelet's
// probes and the NLB's health check. /live mirrors admin /ready (Envoy's own readiness);
// /ready also needs the agent sidecar's heartbeat ($WS_STATE_DIR/agent.alive, written every
// second) to be fresh: without the agent this proxy's leases are neither renewed nor released.
// Redis is not involved (these workers have no Redis at all).
import * as fs from 'fs';
import * as path from 'path';
import { AGENT_STALE_SECONDS } from '../../constructs/envoy';
import { LIVE_PATH, READY_PATH, STATE_FILES } from '../../envoy/bootstrap';
import { lua } from '../support/luajit';
import { Fleet, Worker, defaultSettings, settingsLua } from './harness/worker';

const NO_REDIS = 1; // nothing listens there: a probe that called Redis would fail
let fleet: Fleet;
beforeEach(() => {
  fleet = new Fleet(NO_REDIS);
});
afterEach(async () => {
  await fleet.closeAll();
});

const metrics = (settings?: string) => fleet.worker({}, { script: 'metrics.lua', settings });
/** The agent's heartbeat as lua/cli/agent.lua writes it: the time in seconds and a newline. */
function heartbeat(ageSeconds: number): void {
  fs.writeFileSync(path.join(fleet.stateDir, STATE_FILES.agent_alive), `${Math.floor(Date.now() / 1000) - ageSeconds}\n`);
}

async function probe(w: Worker, p: string, method = 'GET') {
  const r = await w.probe(p, method);
  return { status: r.reply?.headers[':status'], body: r.reply?.body, headers: r.reply?.headers, state: r.state };
}

describe(`GET ${READY_PATH} (readiness probe, NLB health check)`, () => {
  it("GIVEN admin LIVE and a fresh agent heartbeat THEN 200 with admin's body, not cached", async () => {
    const m = await metrics();
    heartbeat(0);
    expect(await probe(m, READY_PATH)).toEqual({
      status: '200',
      body: 'LIVE\n',
      headers: { ':status': '200', 'content-type': 'text/plain; charset=UTF-8', 'cache-control': 'no-cache, max-age=0' },
      state: 'responded',
    });
    expect((await m.logs()).admin_paths).toEqual({ [READY_PATH]: 1 }); // one admin call per probe
  });

  it('GIVEN no heartbeat yet (the agent never ran) THEN 503 saying so', async () => {
    const m = await metrics();
    expect(await probe(m, READY_PATH)).toMatchObject({ status: '503', body: 'agent not running (heartbeat missing)\n' });
  });

  it('GIVEN a heartbeat older than 15 s THEN 503 with its age; 14 s old THEN still ready', async () => {
    // The same bound as the agent container's liveness probe (constructs/envoy.ts).
    expect(lua(`out(require("ready").AGENT_STALE_S)`)).toBe(AGENT_STALE_SECONDS);
    const m = await metrics();
    heartbeat(20);
    expect(await probe(m, READY_PATH)).toMatchObject({
      status: '503',
      body: expect.stringMatching(/^agent not running \(heartbeat 2[01] s old\)\n$/),
    });
    heartbeat(14);
    expect(await probe(m, READY_PATH)).toMatchObject({ status: '200', body: 'LIVE\n' });
  });

  it.each(['DRAINING', 'INITIALIZING', 'PRE_INITIALIZING'])(
    "GIVEN admin %s THEN 503 with admin's body, heartbeat or not",
    async (state) => {
      const m = await metrics();
      heartbeat(0);
      await m.admin(state);
      expect(await probe(m, READY_PATH)).toMatchObject({ status: '503', body: `${state}\n` });
    },
  );

  it("GIVEN admin unreachable THEN 503 (Envoy's async client answers the call itself, and that is mirrored)", async () => {
    const m = await metrics();
    heartbeat(0);
    await m.admin('LIVE', true);
    expect(await probe(m, READY_PATH)).toMatchObject({ status: '503', body: expect.stringMatching(/connection failure/) });
  });

  it('GIVEN an admin cluster Envoy does not have (httpCall raises) THEN 503 "admin unavailable", logged', async () => {
    const m = await fleet.worker({ admin_cluster: 'no_such_cluster' }, { script: 'metrics.lua' });
    heartbeat(0);
    expect(await probe(m, READY_PATH)).toMatchObject({ status: '503', body: 'admin unavailable\n' });
    expect((await m.logs()).logs.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(/^ws-admission metrics: admin \/ready call failed: .*http call cluster invalid/),
    );
  });

  it('HEAD: the same status, no body; a query string is the same path; POST goes on to the route (admin)', async () => {
    const m = await metrics();
    expect(await probe(m, READY_PATH, 'HEAD')).toMatchObject({ status: '503', body: '' });
    heartbeat(0);
    expect(await probe(m, READY_PATH, 'HEAD')).toMatchObject({ status: '200', body: '' });
    expect(await probe(m, `${READY_PATH}?verbose=1`)).toMatchObject({ status: '200', body: 'LIVE\n' });
    expect(await probe(m, READY_PATH, 'POST')).toMatchObject({ status: undefined, state: 'done' });
  });
});

describe(`GET ${LIVE_PATH} (liveness probe): Envoy's own readiness only`, () => {
  it('GIVEN no heartbeat, or a stale one THEN still 200: a restart would drop every WebSocket of the proxy', async () => {
    const m = await metrics();
    expect(await probe(m, LIVE_PATH)).toMatchObject({ status: '200', body: 'LIVE\n' });
    heartbeat(600);
    expect(await probe(m, LIVE_PATH)).toMatchObject({ status: '200', body: 'LIVE\n' });
  });

  it('GIVEN admin DRAINING or unreachable THEN 503 (mirrored)', async () => {
    const m = await metrics();
    await m.admin('DRAINING');
    expect(await probe(m, LIVE_PATH)).toMatchObject({ status: '503', body: 'DRAINING\n' });
    await m.admin('LIVE', true);
    expect(await probe(m, LIVE_PATH)).toMatchObject({ status: '503', body: expect.stringMatching(/connection failure/) });
  });
});

describe('with settings the filter refuses', () => {
  it('the probes still answer from the admin (named as the stack names it)', async () => {
    const s: Record<string, unknown> = { ...defaultSettings(NO_REDIS) };
    delete s.admin_cluster;
    const m = await metrics(settingsLua(s));
    heartbeat(0);
    expect(await probe(m, READY_PATH)).toMatchObject({ status: '200', body: 'LIVE\n' });
    expect(await probe(m, LIVE_PATH)).toMatchObject({ status: '200', body: 'LIVE\n' });
  });
});
