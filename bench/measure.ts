/**
 * What the benchmark parts read of the processes they run: CPU seconds and resident
 * memory from /proc, Envoy's heap from its admin, and the rig's Redis (its pid, the
 * commands it has run).
 */
import * as fs from 'fs';
import { LocalRig } from '../tools/rig/rig';

/**
 * Config overrides for a rig whose clients all connect from 127.0.0.1, i.e. are one
 * client: the per-client limits off (their cost is the `clients` part's).
 */
export const ONE_CLIENT = { maxConnectionsPerClientPercent: 0, rateLimitPerClientPerMinute: 0 } as const;

/** User + system CPU seconds of a process so far (NaN without a pid). */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  // Fields after the command name: state is field 3, utime 14, stime 15 (clock ticks, 100/s).
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * Times Envoy's worker threads (named `wrk:...`) went to sleep waiting for work so far:
 * their voluntary context switches. Per message, it says how many messages a wakeup
 * handles, on which CPU per message depends as much as on the filters.
 */
export function workerSleeps(pid: number): number {
  let n = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('wrk:')) continue;
      n += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] ?? NaN);
    } catch {
      /* thread gone meanwhile */
    }
  }
  return n;
}

/** Resident memory of a process (VmRSS), in bytes. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * Bytes Envoy's heap holds for live objects: `allocated` of the admin's /memory (tcmalloc),
 * which leaves out freed memory the allocator keeps and pages not yet returned.
 * @see https://www.envoyproxy.io/docs/envoy/latest/operations/admin#get--memory
 */
export async function heapAllocatedBytes(adminPort: number): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/memory`, { signal: AbortSignal.timeout(5000) });
  if (r.status !== 200) throw new Error(`Envoy admin /memory on port ${adminPort} answered ${r.status}`);
  return Number(((await r.json()) as { allocated: string }).allocated);
}

/** The pid of the rig's redis-server (for its CPU seconds). */
export async function pidOfRedis(rig: LocalRig): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await rig.redisCli('INFO', 'server'))?.[1]);
}

/** Calls of each command the rig's Redis has run (INFO commandstats). */
export async function redisCommandCalls(rig: LocalRig): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await rig.redisCli('INFO', 'commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1], Number(m[2]));
  if (out.size === 0) throw new Error("the rig's Redis answered INFO commandstats with no command");
  return out;
}

/** Calls per command from `before` to `after`, less `own` (the counting's own commands); commands with none left out. */
export function commandDelta(
  before: Map<string, number>,
  after: Map<string, number>,
  own = new Map<string, number>(),
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [cmd, n] of after) {
    const d = n - (before.get(cmd) ?? 0) - (own.get(cmd) ?? 0);
    if (d > 0) out.set(cmd, d);
  }
  return out;
}

/**
 * The local ports of `pid`'s TCP connections to `remotePort` (its sockets in
 * /proc/<pid>/fd, found in /proc/net/tcp by inode): which Redis clients are that process.
 */
export function tcpPortsTo(pid: number, remotePort: number): Set<number> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = fs.existsSync(table) ? fs.readFileSync(table, 'utf8').split('\n').slice(1) : [];
    for (const line of lines) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      if (parseInt(f[2].split(':')[1], 16) === remotePort) ports.add(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}

/** At most this many commands are kept; a run that sees more fails rather than grow without bound. */
const MONITOR_MAX = 1_000_000;

/**
 * Redis's MONITOR while it runs: every command a client sent, with Redis's time (ms) and
 * the client's port. Commands a script runs are left out (MONITOR shows them from "lua"),
 * so each entry is one call a client made.
 */
export class RedisMonitor {
  private readonly calls: Array<{ ms: number; port: number; command: string }> = [];
  private rest = '';
  private answered = false;
  private overflow = false;

  private constructor(private readonly proc: ReturnType<LocalRig['redisCliStream']>) {
    proc.stdout.on('data', (d: Buffer) => this.feed(d.toString('utf8')));
  }

  /** Starts MONITOR on the rig's Redis; resolves once Redis has answered it (5 s at most). */
  static async start(rig: LocalRig): Promise<RedisMonitor> {
    const m = new RedisMonitor(rig.redisCliStream('MONITOR'));
    const until = Date.now() + 5000;
    while (!m.answered && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    if (!m.answered) {
      await m.stop();
      throw new Error("redis-cli MONITOR on the rig's Redis did not answer within 5 s");
    }
    return m;
  }

  private feed(text: string): void {
    const lines = (this.rest + text).split('\n');
    this.rest = lines.pop() ?? '';
    if (lines.length > 0) this.answered = true; // its first line: OK
    for (const line of lines) {
      // 1712345678.123456 [0 127.0.0.1:54321] "evalsha" "..." ...
      const m = /^(\d+\.\d+) \[\d+ [^\]]*:(\d+)\] "([^"]*)"/.exec(line);
      if (!m) continue;
      if (this.calls.length >= MONITOR_MAX) this.overflow = true;
      else this.calls.push({ ms: Number(m[1]) * 1000, port: Number(m[2]), command: m[3].toLowerCase() });
    }
  }

  /** Calls per command from clients on `ports` between `fromMs` and `toMs` (wall clock). */
  callsFrom(ports: ReadonlySet<number>, fromMs: number, toMs: number): Map<string, number> {
    if (this.overflow) throw new Error(`Redis MONITOR saw more than ${MONITOR_MAX} commands; the counts are incomplete`);
    const out = new Map<string, number>();
    for (const c of this.calls) if (c.ms >= fromMs && c.ms <= toMs && ports.has(c.port)) out.set(c.command, (out.get(c.command) ?? 0) + 1);
    return out;
  }

  /** Stops redis-cli by its pid. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }
}

/** Bytes of one command as RESP on the wire (an array of bulk strings: what a client sends). */
export function respBytes(args: readonly (string | number)[]): number {
  let b = `*${args.length}\r\n`.length;
  for (const a of args) {
    const n = Buffer.byteLength(String(a));
    b += `$${n}\r\n`.length + n + 2;
  }
  return b;
}

/** Calls and microseconds per command of a Redis so far (INFO commandstats text). */
export function commandUsec(info: string): Map<string, { calls: number; usec: number }> {
  const out = new Map<string, { calls: number; usec: number }>();
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out.set(m[1], { calls: Number(m[2]), usec: Number(m[3]) });
  return out;
}
