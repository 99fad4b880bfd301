/**
 * How fast a slot comes back through real Envoy, per way a WebSocket ends (the local
 * rig: 2 proxies, 1 backend with room for 1). Each trial holds the slot through proxy 0,
 * ends the connection, and times from the end (the close or drop call; for the idle
 * timeout, the client seeing the close) until proxy 1 admits the next upgrade. Every way
 * now comes back the same way: Envoy's lease log end entry for the stream (written within
 * FILE_FLUSH_INTERVAL_MS), read by proxy 0's agent (every 50 ms) and released with
 * ws_leases; the filter no longer releases on the backend's Close frame (no Lua runs on an
 * open socket). Reported as milliseconds and as a ratio to the lease TTL (the config's
 * default), the bound when nothing releases (a proxy and its agent gone).
 */
import WebSocket from 'ws';
import { loadConfig } from '../config/load';
import { FILE_FLUSH_INTERVAL_MS } from '../envoy/bootstrap';
import { LocalRig } from '../tools/rig/rig';
import { openWebSocket } from './ws';
import { ONE_CLIENT } from './measure';

const TRIALS = 5;
/** The config's default lease TTL: what a slot waits for when nobody releases it. */
const LEASE_TTL_S = loadConfig({ env: {} }).leaseTtlSeconds;

const closed = (ws: WebSocket) => new Promise<void>((r) => (ws.readyState === ws.CLOSED ? r() : ws.once('close', () => r())));

async function admittedAfter(url: string, limitMs: number): Promise<{ ms: number; ws: WebSocket }> {
  const start = Date.now();
  while (Date.now() - start < limitMs) {
    const r = await openWebSocket(url);
    if (typeof r !== 'number') return { ms: Date.now() - start, ws: r };
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`no upgrade admitted within ${limitMs} ms`);
}

export async function run(): Promise<Record<string, unknown>> {
  const rig = await LocalRig.start({
    config: loadConfig({
      env: {},
      overrides: {
        ...ONE_CLIENT,
        maxConnectionsPerPod: 1,
        rateLimitPerMinute: 0,
        capacityCacheMs: 0,
        idleTimeoutSeconds: 2,
        renewIntervalSeconds: 1,
        leaseTtlSeconds: 8,
      },
    }),
    basePort: 24000,
    backends: 1,
    backendsIn: 'inline',
  });
  const id = rig.backendIds[0];
  const ends: Record<string, (ws: WebSocket) => Promise<void>> = {
    client_close_handshake: async (ws) => {
      const c = closed(ws);
      ws.close(1000);
      await c;
    },
    backend_close_handshake: async (ws) => {
      const c = closed(ws);
      await rig.backendAction('close', id);
      await c;
    },
    client_drop: async (ws) => {
      const c = closed(ws);
      ws.terminate();
      await c;
    },
    backend_drop: async (ws) => {
      const c = closed(ws);
      await rig.backendAction('drop', id);
      await c;
    },
    idle_timeout_2s: async (ws) => {
      await closed(ws);
    },
  };
  const out: Record<string, unknown> = {
    trials: TRIALS,
    leaseTtlSeconds: LEASE_TTL_S,
    how: `every end: Envoy's lease log end entry (file flush every ${FILE_FLUSH_INTERVAL_MS} ms), read by the agent every 50 ms, ws_leases X`,
  };
  try {
    for (const [name, end] of Object.entries(ends)) {
      const ms: number[] = [];
      for (let i = 0; i < TRIALS; i++) {
        // The previous trial's slot is back once proxy 1's agent has released it.
        const held = (await admittedAfter(rig.proxies[0].publicUrl, 10000)).ws;
        const t0 = Date.now();
        await end(held);
        const next = await admittedAfter(rig.proxies[1].publicUrl, 10000);
        ms.push(name.startsWith('idle') ? next.ms : Date.now() - t0);
        const c = closed(next.ws);
        next.ws.close(1000);
        await c;
        await new Promise((r) => setTimeout(r, 100));
      }
      ms.sort((a, b) => a - b);
      out[name] = {
        medianMs: ms[Math.floor(ms.length / 2)],
        maxMs: ms[ms.length - 1],
        ratioToLeaseTtl: +(ms[Math.floor(ms.length / 2)] / (LEASE_TTL_S * 1000)).toExponential(2),
      };
    }
  } finally {
    await rig.stop();
  }
  return out;
}
