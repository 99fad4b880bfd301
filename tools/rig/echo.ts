/**
 * WebSocket echo backends for the local rig: one process serving many loopback
 * addresses (127.0.x.y), each a separate backend "pod" to Envoy.
 *
 * Each backend answers `GET /` with 200 (Envoy's health check; 503 while draining), refuses
 * an upgrade to `/refuse...` with 403, echoes every message
 * (except `push <ms> <count>`: it then sends `push 1`, `push 2`, ... every <ms>; and
 * `headers`: it answers with the upgrade request's headers as it received them, JSON;
 * and anything starting with `sink`: no answer at all),
 * says who it is (response header `x-backend` on the 101 and a first text message
 * `backend <ip:port>`), and counts its own WebSockets: how many are open now (not yet in
 * a close handshake), the most that were open at once, and how many upgrades it ever
 * accepted. Those counts are the judge in the end-to-end tests, independent of Redis.
 * `GET /counts` answers them as JSON, with the open ones by peer address (the proxy that
 * carries them): the node suite's backends are pods it cannot ask otherwise.
 */
import * as http from 'http';
import type { Socket } from 'net';
import { WebSocket, WebSocketServer } from 'ws';
import { wsText } from './ws-data';

export const BACKEND_HEADER = 'x-backend';

/** The address of backend `index` (0-based): 127.0.1.1 ... 127.0.1.250, 127.0.2.1, ... */
export function backendAddress(index: number): string {
  if (!Number.isSafeInteger(index) || index < 0 || index >= 250 * 254) {
    throw new Error(`backend index must be an integer from 0 to ${250 * 254 - 1}, got ${index}`);
  }
  return `127.0.${1 + Math.floor(index / 250)}.${1 + (index % 250)}`;
}

export interface BackendCounts {
  /** Open WebSockets (a close handshake started counts as no longer open). */
  readonly open: number;
  /** The most open at any instant since the start (or the last resetPeak). */
  readonly peak: number;
  /** Upgrades accepted since the start. */
  readonly upgrades: number;
}

/** What `GET /counts` answers: the counts, and the open WebSockets by the peer's address. */
export interface BackendReport extends BackendCounts {
  readonly id: string;
  /** Open WebSockets by peer address (the proxy that carries them). */
  readonly byPeer: { readonly [address: string]: number };
  /** Upgrades accepted since the start, by peer address. */
  readonly upgradesByPeer: { readonly [address: string]: number };
}

interface Backend {
  readonly id: string;
  readonly address: string;
  readonly port: number;
  readonly server: http.Server;
  readonly wss: WebSocketServer;
  readonly sockets: Set<Socket>;
  readonly open: Set<WebSocket>;
  readonly peers: WeakMap<WebSocket, string>;
  readonly upgradesByPeer: Map<string, number>;
  peak: number;
  upgrades: number;
  closed: boolean;
  /** Failing its health check (503 on GET /) while still serving WebSockets: a pod going away. */
  draining: boolean;
}

/** WebSockets not yet in a close handshake (ws leaves OPEN when either side sends Close). */
function openCount(b: Backend): number {
  let n = 0;
  for (const ws of b.open) if (ws.readyState === WebSocket.OPEN) n++;
  return n;
}

function report(b: Backend): BackendReport {
  const byPeer: { [address: string]: number } = {};
  for (const ws of b.open) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    const peer = b.peers.get(ws) ?? 'unknown';
    byPeer[peer] = (byPeer[peer] ?? 0) + 1;
  }
  return { id: b.id, open: openCount(b), peak: b.peak, upgrades: b.upgrades, byPeer, upgradesByPeer: Object.fromEntries(b.upgradesByPeer) };
}

export class EchoBackends {
  private readonly backends = new Map<string, Backend>();

  private constructor() {}

  /** Starts one backend per address, all on `port`. Rejects (and stops them all) if one cannot listen. */
  static async start(addresses: readonly string[], port: number): Promise<EchoBackends> {
    const b = new EchoBackends();
    try {
      for (const a of addresses) await b.listen(a, port);
    } catch (err) {
      await b.stop();
      throw err;
    }
    return b;
  }

  get ids(): string[] {
    return [...this.backends.keys()];
  }

  private listen(address: string, port: number): Promise<void> {
    const id = `${address}:${port}`;
    const server = http.createServer((req, res) => {
      if (req.url === '/counts') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(report(be)));
        return;
      }
      res.writeHead(be.draining ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(`backend ${id}${be.draining ? ' draining' : ''}\n`);
    });
    const wss = new WebSocketServer({ noServer: true });
    const old = this.backends.get(id);
    const be: Backend = {
      id,
      address,
      port,
      server,
      wss,
      sockets: new Set(),
      open: new Set(),
      peers: new WeakMap(),
      upgradesByPeer: new Map(),
      peak: 0,
      upgrades: old?.upgrades ?? 0,
      closed: false,
      draining: false,
    };
    server.on('connection', (s) => {
      be.sockets.add(s);
      s.on('close', () => be.sockets.delete(s));
    });
    wss.on('headers', (headers) => headers.push(`${BACKEND_HEADER}: ${id}`));
    server.on('upgrade', (req, socket, head) => {
      // `/refuse...`: the backend answers the upgrade itself, 403 (bad credentials, say).
      if ((req.url ?? '').startsWith('/refuse')) {
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 10\r\nconnection: close\r\n\r\nforbidden\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        be.upgrades++;
        be.open.add(ws);
        const peer = req.socket.remoteAddress ?? 'unknown';
        be.peers.set(ws, peer);
        be.upgradesByPeer.set(peer, (be.upgradesByPeer.get(peer) ?? 0) + 1);
        be.peak = Math.max(be.peak, openCount(be));
        ws.on('close', () => be.open.delete(ws));
        ws.on('message', (data, isBinary) => {
          // `push <ms> <count>`: the backend talks on its own (server -> client traffic only).
          const text = isBinary ? '' : wsText(data);
          if (text === 'headers') return ws.send(JSON.stringify(req.headers));
          if (text.startsWith('sink')) return undefined; // client -> server only
          const m = /^push (\d{1,6}) (\d{1,6})$/.exec(text);
          if (!m) return ws.send(data, { binary: isBinary });
          let left = Number(m[2]);
          const t = setInterval(() => {
            if (left-- <= 0 || ws.readyState !== WebSocket.OPEN) return clearInterval(t);
            ws.send(`push ${Number(m[2]) - left}`);
          }, Number(m[1]));
          ws.on('close', () => clearInterval(t));
        });
        ws.send(`backend ${id}`);
      });
    });
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new Error(
            `backend ${id} cannot listen: ${err.code ?? err.message}; ${err.code === 'EADDRINUSE' ? 'choose another --port' : 'check the address'}`,
          ),
        ),
      );
      server.listen(port, address, () => {
        this.backends.set(id, be);
        resolve();
      });
    });
  }

  counts(): { [id: string]: BackendCounts } {
    const out: { [id: string]: BackendCounts } = {};
    for (const [id, b] of this.backends) out[id] = { open: openCount(b), peak: b.peak, upgrades: b.upgrades };
    return out;
  }

  resetPeaks(): void {
    for (const b of this.backends.values()) b.peak = openCount(b);
  }

  /** Closes every open WebSocket of a backend with a close handshake it starts. */
  closeAll(id: string, code = 1001): void {
    for (const ws of [...this.get(id).open]) if (ws.readyState === WebSocket.OPEN) ws.close(code, 'backend closing');
  }

  /** Drops every connection of a backend without a close handshake (TCP reset). */
  dropAll(id: string): void {
    const b = this.get(id);
    for (const ws of [...b.open]) ws.terminate();
    for (const s of b.sockets) s.destroy();
  }

  /** A backend that starts failing its health check but keeps serving (Kubernetes: NotReady, preStop). */
  drain(id: string): void {
    this.get(id).draining = true;
  }

  /** A killed backend comes back (a new pod on the same address): listening, healthy. */
  async revive(id: string): Promise<void> {
    const b = this.get(id);
    if (!b.closed) {
      b.draining = false;
      return;
    }
    await this.listen(b.address, b.port);
  }

  /** A backend that dies: stops listening and drops its connections. */
  async kill(id: string): Promise<void> {
    const b = this.get(id);
    if (b.closed) return;
    b.closed = true;
    this.dropAll(id);
    await new Promise<void>((resolve) => b.server.close(() => resolve()));
  }

  private get(id: string): Backend {
    const b = this.backends.get(id);
    if (!b) throw new Error(`no backend ${id}; backends are ${this.ids.join(', ')}`);
    return b;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.backends.keys()].map((id) => this.kill(id)));
  }
}
