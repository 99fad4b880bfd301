/**
 * The per-client limits' cost, part of `npm run bench` (issue 21): Redis time per ws_admit
 * (INFO commandstats of FCALL, the server's own measure) and bytes per call, with 10 and
 * with 10,000 clients tracked (each holding one open lease and one upgrade in its window),
 * for an admission of a new client, the refusal of a client at its own rate limit, and the
 * same admission with the per-client limits off (the marginal cost of fair share); and
 * Redis bytes per tracked client (MEMORY USAGE of `clients`, `crate` and `crate:t`).
 * The fleet is 100 pods x 1,000 slots, so neither the pods nor a client's share bind.
 *
 * Run alone: `npx tsc && node bench/clients.js`. BENCH_CLIENTS (default 10,10000),
 * BENCH_CLIENTS_CALLS (default 300 calls per figure).
 */
import Redis from 'ioredis';
import { startRedis } from '../tools/rig/redis-server';
import { Functions } from '../__tests__/redis/support/functions';
import { commandUsec, respBytes } from './measure';
import { runAlone } from './alone';

const TAG = 'c';
const PROXY = 'ws-envoy-6f7c9d8b5d-x7k2p';
const HOUR = 3600 * 1000;
const WINDOW_MS = 60000;
const PODS = 100;
const MAX_PER_POD = 1000;
/** The defaults: no fixed cap, 50% of the slots, 20 upgrades per client per window. */
const CLIENT_ARGS = ['0', '50', '20'];
const OFF = ['0', '0', '0'];

const podId = (i: number) => `10.0.${(i >> 8) & 255}.${i & 255}:8080`;
/** A client key as client_identity.lua makes them: 16 hex digits. */
const clientKey = (i: number) => (0x10000000 + i).toString(16).padStart(8, '0') + 'c0ffee00';
const connId = (label: string, i: number, client?: string) => `${PROXY}|a1b2c3|${label}${i}|5a9f01${client ? `|${client}` : ''}`;

interface Figures {
  clients: number;
  admitUs: number;
  refuseClientUs: number;
  admitOffUs: number;
  bytesPerCall: number;
  bytesPerTrackedClient: number;
}

async function usecPerCall(redis: Redis): Promise<number> {
  const s = commandUsec(await redis.info('commandstats')).get('fcall');
  return s ? s.usec / s.calls : NaN;
}

function admitCall(f: Functions, id: string, client: string[]): string[] {
  const keys = f.admitKeys();
  return ['FCALL', 'ws_admit', String(keys.length), ...keys, '0', String(WINDOW_MS), String(MAX_PER_POD), String(HOUR), id, ...client];
}

/** Undoes an admission with plain commands (so only the decisions count as FCALL). */
async function undo(redis: Redis, f: Functions, id: string, pod: string, client?: string): Promise<void> {
  const k = f.keys;
  const t = client ? await redis.zscore(k.crateT, id) : null;
  const m = redis.multi().zrem(k.leases, `${id} ${pod}`).zincrby(k.load, -1, pod).hincrby(k.stats, `leases:${PROXY}`, -1);
  if (client) {
    m.hincrby(k.clients, client, -1);
    if (t !== null) m.zrem(k.crate, `${client}:${String(t).padStart(15, '0')}:${id}`).zrem(k.crateT, id);
  }
  await m.exec();
  if (client && Number(await redis.hget(k.clients, client)) <= 0) await redis.hdel(k.clients, client);
}

async function measure(redis: Redis, f: Functions, n: number, calls: number): Promise<Figures> {
  await redis.flushall();
  f.forget();
  await f.start();
  await f.reach(
    PROXY,
    Array.from({ length: PODS }, (_, i) => podId(i)),
  );
  // n clients, each with one open lease and one upgrade in its window.
  for (let i = 0; i < n; i += 500) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(n, i + 500); j++)
      p.call(...(admitCall(f, connId('t', j, clientKey(j)), CLIENT_ARGS) as [string, ...string[]]));
    const replies = (await p.exec()) ?? [];
    for (const [e, r] of replies)
      if (e || (r as unknown[])[0] !== 'ADMITTED') throw new Error(`clients bench: fill refused: ${e ?? JSON.stringify(r)}`);
  }
  const k = f.keys;
  let stateBytes = 0;
  for (const key of [k.clients, k.crate, k.crateT]) stateBytes += Number((await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
  // A client at its own rate limit (20 upgrades in the window, its sockets closed).
  const greedy = 'ffffffffc0ffee00';
  for (let i = 0; i < 20; i++) {
    const id = connId('g', i, greedy);
    const r = (await redis.call(...(admitCall(f, id, CLIENT_ARGS) as [string, ...string[]]))) as unknown[];
    await f.leases(HOUR, 0, [['X', id, String(r[1])]]);
  }
  const figure = async (label: string, client: (i: number) => string | undefined, args: string[], want: string) => {
    await redis.config('RESETSTAT');
    for (let i = 0; i < calls; i++) {
      const c = client(i);
      const id = connId(label, i, c);
      const r = (await redis.call(...(admitCall(f, id, args) as [string, ...string[]]))) as unknown[];
      if (r[0] !== want) throw new Error(`clients bench: expected ${want} with ${n} clients, got ${JSON.stringify(r)}`);
      // (undo runs plain commands: FCALL's figures are the decisions' alone)
      if (r[0] === 'ADMITTED') await undo(redis, f, id, String(r[1]), c);
    }
    return usecPerCall(redis);
  };
  const admitUs = await figure('a', (i) => clientKey(1000000 + i), CLIENT_ARGS, 'ADMITTED');
  const refuseClientUs = await figure('r', () => greedy, CLIENT_ARGS, 'CLIENT');
  const admitOffUs = await figure('o', () => undefined, OFF, 'ADMITTED');
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    clients: n,
    admitUs: r2(admitUs),
    refuseClientUs: r2(refuseClientUs),
    admitOffUs: r2(admitOffUs),
    bytesPerCall: respBytes(admitCall(f, connId('a', 0, clientKey(0)), CLIENT_ARGS)),
    bytesPerTrackedClient: Math.round(stateBytes / n),
  };
}

export async function run(): Promise<Record<string, unknown>> {
  const sizes = (process.env.BENCH_CLIENTS ?? '10,10000').split(',').map(Number);
  const calls = Number(process.env.BENCH_CLIENTS_CALLS ?? 300);
  const server = await startRedis();
  const redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  try {
    await redis.connect();
    const f = await Functions.load(redis, TAG);
    const rows: Array<Figures & Record<string, number>> = [];
    for (const n of sizes) {
      const m = await measure(redis, f, n, calls);
      const base = rows[0] ?? m;
      const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
      rows.push({
        ...m,
        admitX: ratio(m.admitUs, base.admitUs),
        refuseX: ratio(m.refuseClientUs, base.refuseClientUs),
        admitVsOff: ratio(m.admitUs, m.admitOffUs),
      });
    }
    const table = [
      'clients   admit us (x first)   refuse (client) us (x first)   admit, limits off us   admit/off   bytes/call   bytes/tracked client',
      ...rows.map(
        (r) =>
          `${String(r.clients).padEnd(8)}  ${`${r.admitUs.toFixed(1)} (${r.admitX.toFixed(2)})`.padStart(18)}   ${`${r.refuseClientUs.toFixed(1)} (${r.refuseX.toFixed(2)})`.padStart(28)}   ${r.admitOffUs.toFixed(1).padStart(20)}   ${r.admitVsOff.toFixed(2).padStart(9)}   ${String(r.bytesPerCall).padStart(10)}   ${String(r.bytesPerTrackedClient).padStart(20)}`,
      ),
    ];
    process.stdout.write(`clients:\n${table.join('\n')}\n`);
    return {
      method:
        'Redis usec per ws_admit (INFO commandstats of FCALL, the mean over the calls); each admission undone with plain commands; the tracked clients each hold one open lease and one upgrade in its window; bytes per tracked client = MEMORY USAGE of clients + crate + crate:t over the clients',
      rows,
      table,
      target: 'admission and refusal at 10,000 clients <= 2x at 10',
    };
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

runAlone(module, run);
