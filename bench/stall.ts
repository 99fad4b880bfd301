/**
 * The stall through real Envoy: what an admission decision costs the other WebSockets of
 * the same worker. The filter's Redis socket blocks the Envoy worker while it waits (one
 * FCALL ws_admit per upgrade; an open socket makes no Redis call, its lease is kept by the
 * agent beside Envoy, whose Redis calls never block a worker), so every message of every
 * open WebSocket on that worker waits too.
 *
 * The local rig, one proxy with one worker, a fault proxy between the filter and Redis.
 * Ten WebSockets stay open and echo a message every 20 ms; their round trips are the
 * measurement. Phases: quiet; upgrades flowing (one every 20 ms); the same with Redis's
 * round trip 1, 10 and 100 ms longer; and with a Redis that accepts but never answers
 * (silent). Each phase is bounded in count and time. Reported per phase: echo round
 * trip p50 / p99 / max (ms), and the ratio of p99 to the quiet p99.
 */
import WebSocket from 'ws';
import { loadConfig } from '../config/load';
import { LocalRig } from '../tools/rig/rig';
import { openWebSocket } from './ws';
import { wsText } from '../tools/rig/ws-data';
import { ONE_CLIENT } from './measure';

const OPEN = 10;
const PHASE_MS = 3000;
const ECHO_EVERY_MS = 20;
const UPGRADE_EVERY_MS = 20;
const READ_TIMEOUT_MS = 200;

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Echo round trips on every open socket for `ms`, while `load` runs alongside. */
async function measure(sockets: WebSocket[], ms: number, load: () => Promise<number>): Promise<{ rtts: number[]; upgrades: number }> {
  const rtts: number[] = [];
  const pending = new Map<string, number>();
  const onMessage = (data: WebSocket.RawData) => {
    const k = wsText(data);
    const at = pending.get(k);
    if (at !== undefined) {
      rtts.push(Date.now() - at);
      pending.delete(k);
    }
  };
  for (const s of sockets) s.on('message', onMessage);
  let n = 0;
  const tick = setInterval(() => {
    for (const [i, s] of sockets.entries()) {
      const k = `e${i}-${n}`;
      pending.set(k, Date.now());
      s.send(k);
    }
    n++;
  }, ECHO_EVERY_MS);
  const end = Date.now() + ms;
  let upgrades = 0;
  const loader = (async () => {
    while (Date.now() < end) upgrades += await load();
  })();
  await new Promise((r) => setTimeout(r, ms));
  clearInterval(tick);
  await loader;
  await new Promise((r) => setTimeout(r, 500)); // the last echoes
  for (const s of sockets) s.off('message', onMessage);
  // An echo that never came back within the phase counts as its whole wait.
  for (const at of pending.values()) rtts.push(end + 500 - at);
  return { rtts: rtts.sort((a, b) => a - b), upgrades };
}

export async function run(): Promise<Record<string, unknown>> {
  const rig = await LocalRig.start({
    config: loadConfig({
      env: {},
      overrides: { ...ONE_CLIENT, maxConnectionsPerPod: 100000, rateLimitPerMinute: 0, redisReadTimeoutMs: READ_TIMEOUT_MS },
    }),
    basePort: 24100,
    proxies: 1,
    backends: 3,
    backendsIn: 'inline',
    concurrency: 1,
    redisFaults: true,
  });
  const url = rig.proxies[0].publicUrl;
  try {
    const sockets: WebSocket[] = [];
    for (let i = 0; i < OPEN; i++) {
      const s = await openWebSocket(url);
      if (typeof s === 'number') throw new Error(`could not open socket ${i}: ${s}`);
      sockets.push(s);
    }
    const upgradeFlow = async (): Promise<number> => {
      const r = await openWebSocket(url);
      if (typeof r !== 'number') r.terminate();
      await new Promise((res) => setTimeout(res, UPGRADE_EVERY_MS));
      return 1;
    };
    const idle = async (): Promise<number> => {
      await new Promise((res) => setTimeout(res, 50));
      return 0;
    };

    const phases: Array<[string, Partial<{ delayMs: number; silent: boolean }>, () => Promise<number>]> = [
      ['quiet', { delayMs: 0, silent: false }, idle],
      ['upgrades', { delayMs: 0, silent: false }, upgradeFlow],
      // The fault proxy delays each direction: half the added round trip each way.
      ['upgrades, Redis round trip +1 ms', { delayMs: 0.5 }, upgradeFlow],
      ['upgrades, Redis round trip +10 ms', { delayMs: 5 }, upgradeFlow],
      ['upgrades, Redis round trip +100 ms', { delayMs: 50 }, upgradeFlow],
      ['upgrades, Redis silent', { delayMs: 0, silent: true }, upgradeFlow],
    ];
    const out: Record<string, unknown> = {};
    let quietP99 = NaN;
    for (const [name, faults, load] of phases) {
      rig.redisFaults!.set({ delayMs: 0, silent: false, ...faults });
      const { rtts, upgrades } = await measure(sockets, PHASE_MS, load);
      const p99 = quantile(rtts, 0.99);
      if (name === 'quiet') quietP99 = p99;
      out[name] = {
        echoes: rtts.length,
        upgrades,
        p50Ms: quantile(rtts, 0.5),
        p99Ms: p99,
        maxMs: rtts[rtts.length - 1],
        p99VsQuiet: Math.round((p99 / Math.max(1, quietP99)) * 10) / 10,
      };
    }
    rig.redisFaults!.set({ delayMs: 0, silent: false });
    for (const s of sockets) s.terminate();
    return {
      setup: `1 proxy x 1 worker, ${OPEN} open WebSockets echoing every ${ECHO_EVERY_MS} ms, an upgrade every ${UPGRADE_EVERY_MS} ms, redisReadTimeoutMs ${READ_TIMEOUT_MS}, ${PHASE_MS} ms per phase`,
      bound: `a silent Redis stalls the worker for at most one read timeout (${READ_TIMEOUT_MS} ms) per decision, then 500 ms without Redis calls`,
      phases: out,
    };
  } finally {
    await rig.stop();
  }
}
