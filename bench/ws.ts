import * as net from 'net';
import WebSocket from 'ws';

/** How long a client waits for an upgrade's answer (or the backend's first message). */
const OPEN_TIMEOUT_MS = 10_000;

/**
 * Opens a WebSocket through the rig and waits for the echo backend's first message;
 * resolves with the socket, or with the status of the refusal; rejects when neither came
 * within `timeoutMs`.
 */
export function openWebSocket(url: string, timeoutMs = OPEN_TIMEOUT_MS): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no upgrade answer and no first message from ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('message', () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.once('unexpected-response', (_q, r) => {
      clearTimeout(timer);
      r.resume();
      resolve(r.statusCode ?? 0);
    });
    ws.once('error', (e) => {
      if (String(e.message).startsWith('Unexpected server response')) return;
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Opens `n` more WebSockets onto `sockets`, 50 at a time; throws at the first refusal. */
export async function openMany(url: string, n: number, sockets: WebSocket[]): Promise<void> {
  for (let left = n; left > 0; left -= 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, left) }, () => openWebSocket(url)));
    const refused = batch.find((r): r is number => typeof r === 'number');
    if (refused !== undefined) {
      for (const s of batch) if (typeof s !== 'number') s.terminate();
      throw new Error(`upgrade refused: ${refused}`);
    }
    sockets.push(...(batch as WebSocket[]));
  }
}

/** A WebSocket upgrade request as a client writes it, on a raw TCP connection. */
export const UPGRADE =
  'GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

/** One upgrade on a fresh TCP connection, timed to the end of the answer's headers, then dropped (status 0: no answer). */
export function upgradeOnce(port: number): Promise<{ status: number; ms: number }> {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const s = net.connect(port, '127.0.0.1', () => s.write(UPGRADE));
    let got = '';
    const done = (status: number) => {
      s.destroy();
      resolve({ status, ms: Number(process.hrtime.bigint() - start) / 1e6 });
    };
    s.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) done(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0));
    });
    s.on('error', () => done(0));
    s.setTimeout(5000, () => done(0));
  });
}

/** Waits (30 s at most) until `port` answers an upgrade with 101; else throws what `why` says. */
export async function untilUpgraded(port: number, why: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await upgradeOnce(port)).status !== 101) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 200));
  }
}
