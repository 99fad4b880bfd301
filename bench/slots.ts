/**
 * How fast a slot comes back through real Envoy, per way a WebSocket ends (the local
 * rig: 2 proxies, 1 backend with room for 1). Each trial holds the slot through proxy 0,
 * ends the connection, and times from the end (the close or drop call; for the idle
 * timeout, the client seeing the close) until proxy 1 admits the next upgrade. Reported as
 * milliseconds and as a ratio to the lease TTL, the one bound there was before the
 * filter released on the backend's Close frame and the lease log.
 */
import WebSocket from 'ws';
import { loadConfig } from '../config/load';
import { LocalRig } from '../tools/lib/local-rig';
import { openWebSocket } from './ws';

const TRIALS = 5;
const LEASE_TTL_S = 360; // the default: what every one of these ends waited before

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
  const out: Record<string, unknown> = { trials: TRIALS, leaseTtlSeconds: LEASE_TTL_S };
  try {
    for (const [name, end] of Object.entries(ends)) {
      const ms: number[] = [];
      for (let i = 0; i < TRIALS; i++) {
        const held = await openWebSocket(rig.proxies[0].publicUrl);
        if (typeof held === 'number') throw new Error(`${name}: the slot was not free (${held})`);
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
