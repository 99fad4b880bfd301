// The exact Redis commands lua/envoy/filter.lua sends, as Redis received them (MONITOR):
// one FCALL ws_admit per upgrade and nothing on an open socket; one FCALL ws_leases for an
// answer that is not a 101. A change of the contract (lua/redis/README.md) shows up here.
import { PODS, PROXY, useAdmissionRig } from '../support/admission-rig';
import { PLAIN, UPGRADE, admission } from './harness/worker';

const rig = useAdmissionRig({ monitor: true });
const [P1] = PODS;
const CLIENT_KEYS = ['{ws}:clients', '{ws}:crate', '{ws}:crate:t'];
const ADMIT_KEYS = [
  '{ws}:rate',
  '{ws}:stats',
  '{ws}:leases',
  '{ws}:load',
  '{ws}:reach',
  '{ws}:down',
  '{ws}:agents',
  '{ws}:inventory',
  ...CLIENT_KEYS,
];
const LEASES_KEYS = ['{ws}:rate', '{ws}:leases', '{ws}:load', '{ws}:stats', '{ws}:reach', '{ws}:down', '{ws}:inventory', ...CLIENT_KEYS];
/** The per-client caps (settings max_connections_per_client, _percent, rate_limit_per_client): off here. */
const NO_CLIENT_CAPS = ['0', '0', '0'];
/** A worker's first command on its connection: AUTH as the proxy user (MONITOR redacts the arguments). */
const AUTH = ['AUTH', '(redacted)', '(redacted)'];

describe('the Redis calls of one WebSocket', () => {
  it('admission: exactly one FCALL ws_admit (its keys, the limits, the connection id); after the 101, none at all', async () => {
    const w = await rig.worker({ rate_limit: 60, rate_window_ms: 60000, max_connections_per_pod: 2, lease_ttl_ms: 30000 });
    await w.request(UPGRADE); // the worker's connection is open (AUTH is not shown by MONITOR)
    let mark = await rig.monitor.mark();
    const r = await w.request(UPGRADE);
    const id = admission(r).connection_id!;
    expect(await rig.monitor.clientCommands(mark)).toEqual([
      ['FCALL', 'ws_admit', '11', ...ADMIT_KEYS, '60', '60000', '2', '30000', id, ...NO_CLIENT_CAPS],
    ]);

    mark = await rig.monitor.mark();
    await w.response(r.sid, '101');
    for (let i = 0; i < 5; i++) {
      await w.data(r.sid, 'response');
      await w.data(r.sid, 'request');
    }
    await w.closeHandshake(r.sid);
    expect(await rig.monitor.clientCommands(mark)).toEqual([]);
  });

  it('with connection_inventory the client address is the ninth argument of the same call', async () => {
    const w = await rig.worker({ connection_inventory: true });
    const mark = await rig.monitor.mark();
    const r = await w.request(UPGRADE, undefined, '[2001:db8::7]:5000');
    const id = admission(r).connection_id!;
    expect(await rig.monitor.clientCommands(mark)).toEqual([
      AUTH,
      ['FCALL', 'ws_admit', '11', ...ADMIT_KEYS, '0', '60000', '2', '30000', id, ...NO_CLIENT_CAPS, '[2001:db8::7]:5000'],
    ]);
  });

  it("a backend's refusal: one FCALL ws_leases X; Envoy's own reply: one FCALL ws_leases F (TTL, penalty, op, id, pod)", async () => {
    const w = await rig.worker({ lease_ttl_ms: 30000, penalty_ms: 15000 });
    const refused = await w.request(UPGRADE);
    let mark = await rig.monitor.mark();
    await w.response(refused.sid, '403');
    const id1 = admission(refused).connection_id!;
    expect(await rig.monitor.clientCommands(mark)).toEqual([['FCALL', 'ws_leases', '10', ...LEASES_KEYS, '30000', '15000', 'X', id1, P1]]);

    const gone = await w.request(UPGRADE);
    mark = await rig.monitor.mark();
    await w.localReply(gone.sid, 'UH');
    const id2 = admission(gone).connection_id!;
    expect(await rig.monitor.clientCommands(mark)).toEqual([['FCALL', 'ws_leases', '10', ...LEASES_KEYS, '30000', '15000', 'F', id2, P1]]);
  });

  it('N upgrades over several proxies and workers: exactly N calls, each a ws_admit of its own connection id', async () => {
    const ws = [
      await rig.worker({ max_connections_per_pod: 100 }, { proxy: 'envoy-a' }),
      await rig.worker({ max_connections_per_pod: 100 }, { proxy: 'envoy-a' }),
      await rig.worker({ max_connections_per_pod: 100 }, { proxy: 'envoy-b' }),
    ];
    const mark = await rig.monitor.mark();
    const results = await Promise.all(ws.flatMap((w) => Array.from({ length: 10 }, () => w.request(UPGRADE))));
    await Promise.all(results.map((r, i) => ws[Math.floor(i / 10)].response(r.sid, '101')));
    const all = await rig.monitor.clientCommands(mark);
    expect(all.filter((c) => c[0] === 'AUTH')).toEqual([AUTH, AUTH, AUTH]); // one connection per worker
    const cmds = all.filter((c) => c[0] !== 'AUTH');
    expect(cmds).toHaveLength(30);
    expect(new Set(cmds.map((c) => `${c[0]} ${c[1]}`))).toEqual(new Set(['FCALL ws_admit']));
    expect(cmds.map((c) => c[3 + 11 + 4]).sort()).toEqual(results.map((r) => admission(r).connection_id!).sort());
  });

  it('refusals from the worker caches, and plain requests, call nothing; with limit_all_requests a plain request is one FCALL ws_request_rate', async () => {
    const w = await rig.worker({ rate_limit: 1, rate_window_ms: 60000 });
    await w.request(UPGRADE);
    await w.request(UPGRADE); // RATE_LIMITED: cached from now on
    let mark = await rig.monitor.mark();
    for (let i = 0; i < 5; i++) await w.request(UPGRADE);
    for (let i = 0; i < 5; i++) await w.request(PLAIN);
    expect(await rig.monitor.clientCommands(mark)).toEqual([]);

    const all = await rig.worker({ rate_limit: 5, rate_window_ms: 60000, limit_all_requests: true }, { proxy: 'envoy-all' });
    mark = await rig.monitor.mark();
    await all.request(PLAIN);
    const [auth, cmd, ...more] = await rig.monitor.clientCommands(mark);
    expect([auth, more]).toEqual([AUTH, []]);
    expect(cmd.slice(0, 7)).toEqual(['FCALL', 'ws_request_rate', '2', '{ws}:rate:requests', '{ws}:stats', '5', '60000']);
    expect(cmd[7]).toMatch(/^envoy-all\|[0-9a-f]{6}\|\d+\|[0-9a-f]{6}$/);
    expect(cmd).toHaveLength(8);
  });

  it('no call is a command the proxy ACL refuses: no SCRIPT, EVAL, EVALSHA or FUNCTION from a worker', async () => {
    const w = await rig.worker();
    const mark = await rig.monitor.mark();
    const r = await w.request(UPGRADE);
    await w.response(r.sid, '500');
    await w.request(PLAIN);
    const names = (await rig.monitor.clientCommands(mark)).map((c) => c[0]);
    expect(names).toEqual(['AUTH', 'FCALL', 'FCALL']);
    expect(admission(r).connection_id!.startsWith(`${PROXY}|`)).toBe(true);
  });
});
