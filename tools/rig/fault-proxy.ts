/**
 * A TCP proxy on loopback that can make its upstream slow or silent: what the rig puts
 * between the filter and Redis to show what a slow Redis does (a timed-out call, a
 * stalled worker) with the real client code and the real server.
 *
 * Each direction keeps its order: a chunk leaves no earlier than `delayMs` after it
 * arrived and never before the chunk ahead of it. `silent` holds every reply (server ->
 * client) until it is turned off; requests still reach the server, which runs them.
 */
import * as net from 'net';

export interface FaultSettings {
  /** Delay of each chunk, both directions (ms). @default 0 */
  delayMs: number;
  /** Hold replies (upstream -> client) until turned off. @default false */
  silent: boolean;
}

class Lane {
  private readonly queue: { at: number; data: Buffer }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly to: net.Socket,
    private readonly settings: () => { delayMs: number; hold: boolean },
  ) {}

  push(data: Buffer): void {
    const last = this.queue.length > 0 ? this.queue[this.queue.length - 1].at : 0;
    this.queue.push({ at: Math.max(Date.now() + this.settings().delayMs, last), data });
    this.pump();
  }

  pump(): void {
    if (this.timer) return;
    while (this.queue.length > 0 && !this.settings().hold && this.queue[0].at <= Date.now()) {
      if (!this.to.destroyed) this.to.write(this.queue.shift()!.data);
      else this.queue.shift();
    }
    if (this.queue.length > 0 && !this.settings().hold) {
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.pump();
        },
        Math.max(0, this.queue[0].at - Date.now()),
      );
    }
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

export class FaultProxy {
  readonly settings: FaultSettings = { delayMs: 0, silent: false };
  private readonly lanes = new Set<Lane>();
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly server: net.Server) {}

  /** Listens on host:port and forwards every connection to upstreamHost:upstreamPort. */
  static async start(host: string, port: number, upstreamHost: string, upstreamPort: number): Promise<FaultProxy> {
    const server = net.createServer();
    const proxy = new FaultProxy(server);
    server.on('connection', (client) => proxy.accept(client, upstreamHost, upstreamPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return proxy;
  }

  /** Changes the faults; held replies flow again when `silent` goes off. */
  set(s: Partial<FaultSettings>): void {
    Object.assign(this.settings, s);
    for (const l of this.lanes) l.pump();
  }

  /** Drops every connection (as a Redis that went away would). */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, upstreamHost: string, upstreamPort: number): void {
    const upstream = net.connect(upstreamPort, upstreamHost);
    const up = new Lane(upstream, () => ({ delayMs: this.settings.delayMs, hold: false }));
    const down = new Lane(client, () => ({ delayMs: this.settings.delayMs, hold: this.settings.silent }));
    for (const l of [up, down]) this.lanes.add(l);
    for (const s of [client, upstream]) this.sockets.add(s);
    const close = (): void => {
      for (const l of [up, down]) {
        l.clear();
        this.lanes.delete(l);
      }
      for (const s of [client, upstream]) {
        this.sockets.delete(s);
        s.destroy();
      }
    };
    client.on('data', (d) => up.push(d));
    upstream.on('data', (d) => down.push(d));
    for (const s of [client, upstream]) {
      s.on('error', close);
      s.on('close', close);
    }
  }
}
