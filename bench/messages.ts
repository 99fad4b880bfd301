/**
 * What the admission costs the messages of open WebSockets, through real Envoy with one
 * worker, side by side in one run on one local rig:
 *   bare:   the rig's generated config without the admission (variants.ts
 *           withoutAdmission: no Lua filter on the public listener, no lease log);
 *   filter: the rig's own proxy (the stack's generated config; Redis with the production
 *           ACL, the lease-log sidecar).
 * Loads, each with 64 B and 4 KiB binary messages, on SOCKETS WebSockets per variant to
 * echo backends (a child process, so the client and the backends do not share one event
 * loop): DEPTH messages in flight per socket (pipelined), and one at a time (the next sent
 * when the echo is back). A message counts when its echo arrives: it crossed Envoy both
 * ways. Each load and size runs ROUNDS rounds of one cell (CELL_MS) per variant, the
 * variant that goes first alternating, so drift in the machine's other load falls on both.
 * Reported over the rounds: messages/s and Envoy's CPU (utime + stime of the process) per
 * message in microseconds, filter/bare of both, and the median and range of the rounds'
 * CPU ratios (the range is the run's noise; the load average says how busy the machine
 * was otherwise), and how often Envoy's worker went to sleep per message: Envoy's work per
 * message falls as more messages wait per wakeup, so CPU ratios compare like with like
 * only where the two variants' wakeups per message are alike.
 *
 * Redis during every cell: the calls each Envoy made on its own connections (MONITOR,
 * clients told apart by the process that owns the socket; commands run by a script are
 * not calls), the calls of the filter proxy's agent (the lease-log sidecar), and INFO
 * commandstats (every command, those run by functions included, less the counting's own).
 * The config's shortest renewal interval is used (renewIntervalSeconds: Envoy's periodic
 * lease log entry for every open stream), so the agent's renewals (ws_leases R) fall
 * inside every cell; the filter itself makes no Redis call on an open socket.
 *
 * Then Envoy's memory per open WebSocket, bare against filter: MEMORY_WARM sockets opened
 * (pools and caches warm), RSS and heap (admin /memory `allocated`) read, MEMORY_SOCKETS
 * more opened, read again; the difference over MEMORY_SOCKETS.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import WebSocket from 'ws';
import { loadConfig } from '../config/load';
import { FIELDS, StackConfig } from '../config/schema';
import { LocalRig, localRedis } from '../tools/rig/rig';
import {
  RedisMonitor,
  commandDelta,
  cpuSeconds,
  heapAllocatedBytes,
  redisCommandCalls,
  rssBytes,
  tcpPortsTo,
  workerSleeps,
  ONE_CLIENT,
} from './measure';
import { RigVariants, withoutAdmission } from './variants';
import { openMany, untilUpgraded } from './ws';

const BASE = 24500;
const BACKENDS = 8;
const SOCKETS = 8;
const DEPTH = 16;
const SIZES = [64, 4096] as const;
const ROUNDS = 5;
const CELL_MS = 1500;
const WARMUP_MS = 1000;
/** The longest wait for the echoes still in flight when a cell ends. */
const DRAIN_MS = 5000;
const MEMORY_WARM = 50;
const MEMORY_SOCKETS = 500;
const SETTLE_MS = 1500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
const round2 = (x: number) => round(x, 2);
const sum = (m: { [k: string]: number }) => Object.values(m).reduce((a, b) => a + b, 0);
const sumOf = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
const say = (line: string) => process.stdout.write(`messages: ${line}\n`);

type Variant = 'bare' | 'filter';
const LOADS = [
  { name: `pipelined, ${DEPTH} in flight`, depth: DEPTH },
  { name: 'one at a time', depth: 1 },
] as const;

interface Target {
  readonly variant: Variant;
  readonly pid: number;
  readonly adminPort: number;
  readonly url: string;
  readonly sockets: WebSocket[];
}

/** Who talks to the rig's Redis: the local ports of each process's connections, as seen so far. */
class RedisClients {
  private readonly ports = new Map<number, Set<number>>();
  constructor(private readonly redisPort: number) {}

  /** The ports of `pid`'s connections now and before (a connection closed meanwhile is kept). */
  of(pid: number | undefined): Set<number> {
    if (!pid) return new Set();
    const known = this.ports.get(pid) ?? new Set<number>();
    for (const p of tcpPortsTo(pid, this.redisPort)) known.add(p);
    this.ports.set(pid, known);
    return known;
  }
}

/** One variant in one load and size, over every round. */
interface Result {
  readonly messages: number;
  readonly seconds: number;
  readonly msgsPerSecond: number;
  readonly envoyCpuSeconds: number;
  readonly envoyCpuUsPerMessage: number;
  /** Times Envoy's worker went to sleep, per message (workerSleeps). */
  readonly workerWakeupsPerMessage: number;
  /** Calls this variant's Envoy made to Redis (MONITOR). */
  readonly redisCallsFromEnvoy: { [command: string]: number };
  /** Calls of the filter proxy's lease-log sidecar meanwhile (MONITOR). */
  readonly redisCallsFromSidecar: { [command: string]: number };
  /** Every command Redis ran meanwhile, those run by scripts included (INFO commandstats). */
  readonly redisCommands: { [command: string]: number };
  readonly rounds: ReadonlyArray<{ readonly msgsPerSecond: number; readonly envoyCpuUsPerMessage: number }>;
}

interface Row {
  readonly load: string;
  readonly bytes: number;
  readonly bare: Result;
  readonly filter: Result;
  readonly msgsPerSecondRatio: number;
  readonly cpuPerMessageRatio: number;
  readonly cpuPerMessageRatioByRound: readonly number[];
  readonly cpuPerMessageRatioMedian: number;
}

/** A variant's cells in one load and size, added up. */
class Tally {
  messages = 0;
  seconds = 0;
  cpu = 0;
  sleeps = 0;
  readonly envoy = new Map<string, number>();
  readonly sidecar = new Map<string, number>();
  readonly commands = new Map<string, number>();
  readonly rounds: Array<{ msgsPerSecond: number; envoyCpuUsPerMessage: number }> = [];

  add(
    c: { messages: number; seconds: number; cpu: number; sleeps: number },
    envoy: Map<string, number>,
    sidecar: Map<string, number>,
    commands: Map<string, number>,
  ) {
    this.messages += c.messages;
    this.seconds += c.seconds;
    this.cpu += c.cpu;
    this.sleeps += c.sleeps;
    for (const [into, from] of [
      [this.envoy, envoy],
      [this.sidecar, sidecar],
      [this.commands, commands],
    ] as const) {
      for (const [k, v] of from) into.set(k, (into.get(k) ?? 0) + v);
    }
    this.rounds.push({ msgsPerSecond: Math.round(c.messages / c.seconds), envoyCpuUsPerMessage: round((c.cpu / c.messages) * 1e6, 2) });
  }

  result(): Result {
    return {
      messages: this.messages,
      seconds: round(this.seconds, 2),
      msgsPerSecond: Math.round(this.messages / this.seconds),
      envoyCpuSeconds: round(this.cpu, 2),
      envoyCpuUsPerMessage: round((this.cpu / this.messages) * 1e6, 2),
      workerWakeupsPerMessage: round(this.sleeps / this.messages, 3),
      redisCallsFromEnvoy: Object.fromEntries(this.envoy),
      redisCallsFromSidecar: Object.fromEntries(this.sidecar),
      redisCommands: Object.fromEntries(this.commands),
      rounds: this.rounds,
    };
  }
}

/** The lease renewal setting; typed as a plain string so this still compiles once the setting is gone. */
const RENEWAL_KEY: string = 'renewIntervalSeconds';

/** The shortest renewal interval the config accepts, if it still has the setting. */
function shortestRenewal(): { readonly overrides: Partial<StackConfig>; readonly says: string } {
  const f = FIELDS.find((x) => x.key === RENEWAL_KEY);
  if (f?.min === undefined) return { overrides: {}, says: `no ${RENEWAL_KEY} setting` };
  return { overrides: { [f.key]: f.min }, says: `${f.key} ${f.min} (its minimum)` };
}

/**
 * Echoes on every socket of `t` for `ms`, `depth` messages of `bytes` in flight per
 * socket; then waits (DRAIN_MS at most) for the ones still in flight.
 */
async function echoes(
  t: Target,
  bytes: number,
  depth: number,
  ms: number,
): Promise<{ messages: number; seconds: number; cpu: number; sleeps: number }> {
  const payload = Buffer.alloc(bytes, 0x61);
  let echoed = 0;
  let wrong = 0;
  let inFlight = 0;
  let sending = true;
  const handlers = t.sockets.map((s) => {
    const on = (data: WebSocket.RawData, isBinary: boolean) => {
      inFlight--;
      if (!sending) return;
      if (isBinary && Buffer.isBuffer(data) && data.length === bytes) echoed++;
      else wrong++;
      inFlight++;
      s.send(payload);
    };
    s.on('message', on);
    return on;
  });
  const cpu0 = cpuSeconds(t.pid);
  const sleeps0 = workerSleeps(t.pid);
  const start = process.hrtime.bigint();
  for (const s of t.sockets) {
    for (let i = 0; i < depth; i++) {
      inFlight++;
      s.send(payload);
    }
  }
  await sleep(ms);
  sending = false;
  const cpu = cpuSeconds(t.pid) - cpu0;
  const sleeps = workerSleeps(t.pid) - sleeps0;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const messages = echoed;
  const until = Date.now() + DRAIN_MS;
  while (inFlight > 0 && Date.now() < until) await sleep(10);
  t.sockets.forEach((s, i) => s.off('message', handlers[i]));
  if (inFlight > 0) throw new Error(`${t.variant}: ${inFlight} messages not echoed within ${DRAIN_MS} ms of the cell's end`);
  if (wrong > 0) throw new Error(`${t.variant}: ${wrong} echoes were not the ${bytes} B binary message sent`);
  if (messages === 0) throw new Error(`${t.variant}: no echo in ${ms} ms`);
  return { messages, seconds, cpu, sleeps };
}

/** Every load and size on both variants, ROUNDS times, with what Redis saw during each cell. */
async function messagePhase(rig: LocalRig, targets: Target[]): Promise<Row[]> {
  const clients = new RedisClients(localRedis(rig.basePort, rig.workDir).port);
  const sidecar = rig.proxies[0].agent?.pid;
  // The commands of the counting itself (redis-cli's AUTH and INFO), taken off each cell's count.
  const own = commandDelta(await redisCommandCalls(rig), await redisCommandCalls(rig));
  const monitor = await RedisMonitor.start(rig);
  try {
    const rows: Row[] = [];
    let n = 0;
    for (const load of LOADS) {
      for (const bytes of SIZES) {
        const tally = { bare: new Tally(), filter: new Tally() };
        for (let r = 1; r <= ROUNDS; r++) {
          for (const t of n++ % 2 === 0 ? targets : [...targets].reverse()) {
            const before = await redisCommandCalls(rig);
            const from = Date.now();
            const c = await echoes(t, bytes, load.depth, CELL_MS);
            const to = Date.now();
            const commands = commandDelta(before, await redisCommandCalls(rig), own);
            // Read after the INFO above: MONITOR's lines of the cell have arrived by then.
            const envoy = monitor.callsFrom(clients.of(t.pid), from, to);
            const side = monitor.callsFrom(clients.of(sidecar), from, to);
            tally[t.variant].add(c, envoy, side, commands);
            const last = tally[t.variant].rounds[r - 1];
            say(
              `${load.name}, ${bytes} B, round ${r}, ${t.variant}: ${last.msgsPerSecond} msgs/s, ` +
                `${last.envoyCpuUsPerMessage} us Envoy CPU/msg, ${round(c.sleeps / c.messages, 3)} worker wakeups/msg; Redis: ${sumOf(envoy)} calls from Envoy, ` +
                `${sumOf(side)} from the sidecar, ${sumOf(commands)} commands`,
            );
          }
        }
        const bare = tally.bare.result();
        const filter = tally.filter.result();
        const byRound = filter.rounds.map((f, i) => round2(f.envoyCpuUsPerMessage / bare.rounds[i].envoyCpuUsPerMessage));
        rows.push({
          load: load.name,
          bytes,
          bare,
          filter,
          msgsPerSecondRatio: round2(filter.msgsPerSecond / bare.msgsPerSecond),
          cpuPerMessageRatio: round2(filter.envoyCpuUsPerMessage / bare.envoyCpuUsPerMessage),
          cpuPerMessageRatioByRound: byRound,
          cpuPerMessageRatioMedian: [...byRound].sort((a, b) => a - b)[Math.floor(byRound.length / 2)],
        });
      }
    }
    return rows;
  } finally {
    await monitor.stop();
  }
}

/** Envoy's RSS and heap per WebSocket: MEMORY_WARM opened first, then MEMORY_SOCKETS measured. */
async function memoryPerSocket(t: Target): Promise<Record<string, number>> {
  const sockets: WebSocket[] = [];
  try {
    await openMany(t.url, MEMORY_WARM, sockets);
    await sleep(SETTLE_MS);
    const rss0 = rssBytes(t.pid);
    const heap0 = await heapAllocatedBytes(t.adminPort);
    await openMany(t.url, MEMORY_SOCKETS, sockets);
    await sleep(SETTLE_MS);
    const rss1 = rssBytes(t.pid);
    const heap1 = await heapAllocatedBytes(t.adminPort);
    return {
      rssBefore: rss0,
      rssAfter: rss1,
      heapBefore: heap0,
      heapAfter: heap1,
      rssKBPerSocket: round((rss1 - rss0) / MEMORY_SOCKETS / 1024, 1),
      heapKBPerSocket: round((heap1 - heap0) / MEMORY_SOCKETS / 1024, 1),
    };
  } finally {
    for (const s of sockets) s.terminate();
  }
}

function table(rows: readonly Row[], memory: { bare: Record<string, number>; filter: Record<string, number> }, load: string): string {
  const cells = [
    [
      'load',
      'size',
      'msgs/s bare',
      'filter',
      'ratio',
      'CPU us/msg bare',
      'filter',
      'ratio',
      'median',
      'range',
      'wakeups/msg bare',
      'filter',
      'Redis calls from Envoy bare',
      'filter',
    ],
    ...rows.map((c) => [
      c.load,
      `${c.bytes} B`,
      String(c.bare.msgsPerSecond),
      String(c.filter.msgsPerSecond),
      c.msgsPerSecondRatio.toFixed(2),
      c.bare.envoyCpuUsPerMessage.toFixed(2),
      c.filter.envoyCpuUsPerMessage.toFixed(2),
      c.cpuPerMessageRatio.toFixed(2),
      c.cpuPerMessageRatioMedian.toFixed(2),
      `${Math.min(...c.cpuPerMessageRatioByRound).toFixed(2)}-${Math.max(...c.cpuPerMessageRatioByRound).toFixed(2)}`,
      c.bare.workerWakeupsPerMessage.toFixed(3),
      c.filter.workerWakeupsPerMessage.toFixed(3),
      String(sum(c.bare.redisCallsFromEnvoy)),
      String(sum(c.filter.redisCallsFromEnvoy)),
    ]),
  ];
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const lines = cells.map((r) => r.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  '));
  const m = (what: string, k: string) =>
    `${what} bare ${memory.bare[k]} KB, filter ${memory.filter[k]} KB, ratio ${(memory.filter[k] / memory.bare[k]).toFixed(2)}`;
  lines.push(`CPU ratio: over all ${ROUNDS} rounds, then the median and range of the rounds' ratios; ${load}`);
  lines.push(
    `memory per open WebSocket (${MEMORY_SOCKETS} opened after ${MEMORY_WARM}): ` +
      `${m('RSS', 'rssKBPerSocket')}; ${m('heap', 'heapKBPerSocket')}`,
  );
  return lines.join('\n');
}

export async function run(): Promise<Record<string, unknown>> {
  const renewal = shortestRenewal();
  const config = loadConfig({
    env: {},
    overrides: { ...ONE_CLIENT, maxConnectionsPerPod: 1000, rateLimitPerMinute: 0, ...renewal.overrides },
  });
  const rig = await LocalRig.start({
    config,
    basePort: BASE,
    proxies: 1,
    backends: BACKENDS,
    backendsIn: 'child',
    concurrency: 1,
  });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-messages-'));
  const variants = new RigVariants(rig, work);
  const targets: Target[] = [];
  try {
    const bare = variants.start(1, withoutAdmission);
    const proxy = rig.proxies[0];
    targets.push(
      { variant: 'bare', pid: bare.pid, adminPort: bare.layout.adminPort, url: `ws://127.0.0.1:${bare.layout.publicPort}/`, sockets: [] },
      { variant: 'filter', pid: proxy.envoy!.pid!, adminPort: proxy.adminPort, url: proxy.publicUrl, sockets: [] },
    );
    await untilUpgraded(
      bare.layout.publicPort,
      () => `the bare Envoy never answered 101; its log:\n${fs.readFileSync(bare.logFile, 'utf8').slice(-1500)}`,
    );
    for (const t of targets) await openMany(t.url, SOCKETS, t.sockets);
    say(`${SOCKETS} WebSockets open through each variant; warming up`);
    for (const t of targets) await echoes(t, SIZES[0], DEPTH, WARMUP_MS);
    await sleep(500); // the lease log's releases of the readiness upgrade, before any count

    const loadBefore = os.loadavg()[0];
    const rows = await messagePhase(rig, targets);
    const machine = `load average ${loadBefore.toFixed(1)} before the cells, ${os.loadavg()[0].toFixed(1)} after, on ${os.cpus().length} CPUs`;
    for (const t of targets) for (const s of t.sockets.splice(0)) s.terminate();

    say(`memory: ${MEMORY_WARM} + ${MEMORY_SOCKETS} WebSockets through each variant`);
    const memory = { bare: await memoryPerSocket(targets[0]), filter: await memoryPerSocket(targets[1]) };
    const summary = table(rows, memory, machine);
    process.stdout.write(`${summary}\n`);
    return {
      setup:
        `${SOCKETS} WebSockets per variant to ${BACKENDS} echo backends, 1 Envoy worker each, ${ROUNDS} rounds of ` +
        `${CELL_MS / 1000} s per variant, load and size, ` +
        `${renewal.says}; a message = one echo (through Envoy both ways); ${machine}`,
      cells: rows,
      redisCallsFromEnvoyDuringMessages: {
        bare: rows.reduce((a, c) => a + sum(c.bare.redisCallsFromEnvoy), 0),
        filter: rows.reduce((a, c) => a + sum(c.filter.redisCallsFromEnvoy), 0),
      },
      memory: {
        ...memory,
        rssRatio: round2(memory.filter.rssKBPerSocket / memory.bare.rssKBPerSocket),
        heapRatio: round2(memory.filter.heapKBPerSocket / memory.bare.heapKBPerSocket),
      },
      table: summary.split('\n'),
    };
  } finally {
    for (const t of targets) for (const s of t.sockets) s.terminate();
    await variants.stop();
    await rig.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}
