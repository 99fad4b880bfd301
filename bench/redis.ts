/**
 * Redis half of `npm run bench`: server-side cost of the admission decision (`FCALL
 * ws_admit` of the Functions library, lua/redis/ws_admission.lua) relative to plain INCR
 * (redis-benchmark, 50 clients, no pipelining, same Redis, same run) and Redis memory per
 * live connection (MEMORY USAGE across 10,000 leases) and per pod (its `load` member and
 * its `reach` mask; before the library, a pod cost its `load` member plus one `hosts`
 * member per host view holding it). The calibration floor is an FCALL of a function that
 * returns 1 with the same keys and arguments (it was an EVALSHA of `return 1`).
 *
 * Run alone: `npx tsc && node bench/redis.js` (or import { run } from bench/run.ts).
 * Environment: BENCH_REDIS_REQUESTS (default 30000 per measurement),
 * BENCH_REDIS_ROUNDS (default 7; the median round is reported),
 * BENCH_REDIS_LIBRARY (default lua/redis/ws_admission.lua) benchmarks another copy of the
 * library (A/B against a previous version),
 * BENCH_REDIS_CALLGRIND=1 adds user-space instructions per request counted under
 * valgrind (deterministic, unlike throughput on a shared machine; ~30 s more).
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Redis from 'ioredis';
import { freePort, startRedis } from '../tools/rig/redis-server';
import { Functions, LIBRARY_FILE } from '../__tests__/redis/support/functions';
import { runAlone } from './alone';

// BENCH_REDIS_LIBRARY: benchmark another copy of the library (A/B against a previous version).
const LIBRARY = process.env.BENCH_REDIS_LIBRARY ?? LIBRARY_FILE;
const PODS = ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'];
/** The proxy of every connection id below: its agent registered PODS as its slot's hosts. */
const PROXY = 'ws-envoy-6f7c9d8b5d-x7k2p'; // a Deployment pod name, as the filter takes it from POD_NAME
/** The calibration: a function that does nothing, called like ws_admit. */
const NOOP_LIBRARY = "#!lua name=bench_noop\nredis.register_function('bench_noop', function() return 1 end)";

/** One redis-benchmark measurement of one command line. */
export interface Throughput {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

interface Scenario {
  readonly name: string;
  readonly what: string;
  /** Expected ws_admit status, checked once before measuring. */
  readonly expect?: 'ADMITTED' | 'FULL' | 'RATE_LIMITED';
  /** The command line, on the scenarios' states. */
  readonly args: (states: States) => string[];
}

function benchmark(port: number, requests: number, args: string[]): Throughput {
  const r = spawnSync(
    'redis-benchmark',
    ['-h', '127.0.0.1', '-p', String(port), '-c', '50', '-n', String(requests), '-r', '100000000', '--csv', ...args],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`redis-benchmark failed: ${r.stderr || r.stdout}`);
  const row = r.stdout.trim().split('\n').pop() ?? '';
  const cols = row.split('","').map((c) => c.replace(/"/g, ''));
  const rps = Number(cols[1]);
  if (!Number.isFinite(rps) || rps <= 0) throw new Error(`cannot parse redis-benchmark output: ${r.stdout}`);
  return { rps, p50Ms: Number(cols[4]), p99Ms: Number(cols[6]) };
}

/** CPU seconds (user + system) the redis-server process has used so far (INFO cpu). */
async function serverCpu(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const get = (k: string) => Number(new RegExp(`${k}:([0-9.]+)`).exec(info)![1]);
  return get('used_cpu_user') + get('used_cpu_sys');
}

/** Server CPU time per call of `command` since the last CONFIG RESETSTAT (INFO commandstats). */
async function usecPerCall(redis: Redis, command: string): Promise<number> {
  const m = new RegExp(`cmdstat_${command}:calls=(\\d+),usec=(\\d+)`).exec(await redis.info('commandstats'));
  return m ? Number(m[2]) / Number(m[1]) : NaN;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Each scenario keeps its own state under its own hash tag. */
const STATES = ['adm', 'adm0', 'full', 'rl'] as const;
type State = (typeof STATES)[number];

/** Every state's calls, by the contract's helper (__tests__/redis/support/functions.ts). */
type States = Record<State, Functions>;
function statesOn(redis: Redis): States {
  return Object.fromEntries(STATES.map((s) => [s, new Functions(redis, `b:${s}`)])) as States;
}

/**
 * ws_admit argument lists. `__rand_int__` is replaced by redis-benchmark with an
 * independent random 12-digit number per occurrence and per request (-r 1e8): every
 * connection id is new.
 */
function admitArgs(fn: string, f: Functions, o: { limit: number; windowMs: number; maxPerPod: number; ttlMs: number }): string[] {
  const keys = f.admitKeys();
  return [
    'FCALL',
    fn,
    String(keys.length),
    ...keys,
    String(o.limit),
    String(o.windowMs),
    String(o.maxPerPod),
    String(o.ttlMs),
    `${PROXY}|0|__rand_int__|0`,
    // The per-client limits off (the id carries no client key): the `clients` part measures them.
    '0',
    '0',
    '0',
  ];
}
// The rate limit is on in the admit scenarios (as in production) but never binds.
// A 2 ms window at benchmark rates (~20-40k/s) keeps the window set at 40-80
// entries, the size production's default 60 per minute gives it (a compact
// listpack); a long window would benchmark a set of 10^5 entries instead. The
// admitting scenarios' leases live 2 ms too, for the same reason: in steady state
// each admission gives back about one expired lease, as every lease of production
// ends in a release or an expiry.
const RATE = { limit: 100000000, windowMs: 2 };
const NOOP = 'bench_noop';

const SCENARIOS: Scenario[] = [
  { name: 'incr', what: 'INCR of one key (the reference)', args: () => ['INCR', '{b}:counter'] },
  {
    name: 'noopFunction',
    what: 'calibration: FCALL of a function that returns 1, with the same 8 keys and 5 arguments as refuseFull (the floor of any call under this contract)',
    args: (s) => admitArgs(NOOP, s.full, { limit: 60, windowMs: 60000, maxPerPod: 2, ttlMs: 30000 }),
  },
  {
    name: 'admit',
    expect: 'ADMITTED',
    what: 'ADMITTED onto the least-loaded of 3 pods (counts ~0-1 of 1e9), rate limit on; leases of 2 ms, so about one expired lease given back per call',
    args: (s) => admitArgs('ws_admit', s.adm, { ...RATE, maxPerPod: 1000000000, ttlMs: 2 }),
  },
  {
    name: 'admitNoRateLimit',
    expect: 'ADMITTED',
    what: 'as admit with the rate limit off (argument 1 = 0)',
    args: (s) => admitArgs('ws_admit', s.adm0, { limit: 0, windowMs: 60000, maxPerPod: 1000000000, ttlMs: 2 }),
  },
  {
    name: 'refuseFull',
    expect: 'FULL',
    what: 'FULL: 3 pods with 2 of 2 live leases each, rate limit on (60 per 60 s, 1 used)',
    args: (s) => admitArgs('ws_admit', s.full, { limit: 60, windowMs: 60000, maxPerPod: 2, ttlMs: 30000 }),
  },
  {
    name: 'refuseFullNoRateLimit',
    expect: 'FULL',
    what: 'as refuseFull with the rate limit off (argument 1 = 0)',
    args: (s) => admitArgs('ws_admit', s.full, { limit: 0, windowMs: 60000, maxPerPod: 2, ttlMs: 30000 }),
  },
  {
    name: 'refuseRateLimited',
    expect: 'RATE_LIMITED',
    what: 'RATE_LIMITED: window already holds the limit (60 per 60 s)',
    args: (s) => admitArgs('ws_admit', s.rl, { limit: 60, windowMs: 60000, maxPerPod: 2, ttlMs: 30000 }),
  },
];

/** The library (BENCH_REDIS_LIBRARY's copy) and the no-op calibration function, as an administrator loads them. */
async function loadLibraries(redis: Redis): Promise<void> {
  await redis.call('FUNCTION', 'LOAD', 'REPLACE', fs.readFileSync(LIBRARY, 'utf8'));
  await redis.call('FUNCTION', 'LOAD', 'REPLACE', NOOP_LIBRARY);
}

async function prepare(states: States): Promise<void> {
  const long = 3600 * 1000;
  // Each state has an epoch (no recovery under way) and the proxy's 3 pods as its hosts.
  for (const s of STATES) {
    await states[s].start();
    await states[s].reach(PROXY, PODS);
  }
  // refuseFull: 2 live leases on each of 3 pods, one window entry of 60.
  for (let i = 0; i < 6; i++) {
    await states.full.admitOnce({ rateLimit: 0, windowMs: 1000, maxPerPod: 2, ttlMs: long, id: `${PROXY}|1|${i}|0` });
  }
  await states.full.redis.zadd(states.full.keys.rate, Date.now(), `${PROXY}|2|0|0`);
  // refuseRateLimited: the window holds the limit.
  for (let i = 0; i < 60; i++) {
    await states.rl.admitOnce({ rateLimit: 60, windowMs: 60000, maxPerPod: 1000, ttlMs: 1000, id: `${PROXY}|3|${i}|0` });
  }
}

async function checkScenario(redis: Redis, s: Scenario, states: States): Promise<void> {
  if (!s.expect) return;
  const argv = s.args(states).map((a) => a.replace(/__rand_int__/g, String(Math.floor(Math.random() * 1e12)).padStart(12, '0'))) as [
    string,
    ...string[],
  ];
  const reply = (await redis.call(...argv)) as unknown[];
  if (reply[0] !== s.expect) throw new Error(`bench scenario ${s.name}: expected ${s.expect}, got ${JSON.stringify(reply)}`);
}

/** Bytes of Redis memory per live lease, with the stack's default shape (2 per pod). */
async function memoryPerLease(redis: Redis, leases: number, perPod: number) {
  await redis.flushall();
  await new Promise((r) => setTimeout(r, 200));
  const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
  const f = new Functions(redis, 'ws');
  await f.start();
  const before = await usedMemory();
  const pods = Math.ceil(leases / perPod);
  const podId = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:8080`;
  const podIds = Array.from({ length: pods }, (_, i) => podId(i));
  // The proxy's agent registers its healthy hosts (ws_hosts claim, add in batches, commit).
  await f.reach(PROXY, podIds);
  const afterHosts = await usedMemory();
  // Connection ids as the filter makes them: <proxy>|<worker hex>|<counter>|<random hex>,
  // with a Kubernetes Deployment pod name as the proxy id (the one registered above).
  const idOf = (n: number) => `${PROXY}|a1b2c3|${n}|${((n * 7919) % 16777216).toString(16).padStart(6, '0')}`;
  const keys = f.admitKeys();
  const pipe = redis.pipeline();
  for (let n = 0; n < leases; n++)
    pipe.call('FCALL', 'ws_admit', keys.length, ...keys, '0', '60000', String(perPod), '3600000', idOf(n), '0', '0', '0');
  const replies = await pipe.exec();
  const admitted = (replies ?? []).filter(([e, r]) => !e && (r as unknown[])[0] === 'ADMITTED').length;
  if (admitted !== leases) throw new Error(`memory bench: ${admitted} of ${leases} admitted`);
  // Let serverCron finish the incremental rehash of the keyspace dicts (both
  // tables are allocated while it runs) before reading used_memory.
  await new Promise((r) => setTimeout(r, 500));
  const after = await usedMemory();
  const usage = async (k: string) => Number(await redis.memory('USAGE', k, 'SAMPLES', '0'));
  const leaseBytes = await usage(f.keys.leases);
  const sampleId = idOf(leases - 1);
  const per = (bytes: number) => Math.round((bytes / leases) * 10) / 10;
  const perPodBytes = (bytes: number) => Math.round((bytes / pods) * 10) / 10;
  const result = {
    leases,
    pods,
    perPod,
    sampleConnectionId: sampleId,
    connectionIdBytes: sampleId.length,
    leasesEncoding: String(await redis.object('ENCODING', f.keys.leases)),
    memoryUsageBytesPerLease: per(leaseBytes),
    usedMemoryDeltaBytesPerLease: per(after - afterHosts),
    // Per pod, whatever its leases: its count in `load` and its slot mask in `reach`.
    bytesPerPod: {
      load: perPodBytes(await usage(f.keys.load)),
      reach: perPodBytes(await usage(f.keys.reach)),
      usedMemoryDelta: perPodBytes(afterHosts - before),
    },
  };
  await redis.flushall();
  return result;
}

/**
 * User-space instructions per request of every scenario, counted by callgrind on a
 * redis-server running under valgrind: the same on a busy machine as on an idle
 * one, so it shows what a change to a script costs. Kernel work (the socket I/O
 * that dominates INCR) is not counted.
 */
async function instructionCounts(requests = 2000): Promise<Record<string, number>> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-callgrind-'));
  const vg = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${dir}/cg.out`,
      'redis-server',
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
    ],
    { stdio: 'ignore' },
  );
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => 200 });
  redis.on('error', () => {
    /* connection refused until valgrind has started redis-server */
  });
  try {
    for (let i = 0; ; i++) {
      try {
        await redis.connect();
        break;
      } catch (e) {
        if (i > 100) throw new Error(`redis-server under valgrind did not start: ${String(e)}`, { cause: e });
        redis.disconnect();
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await loadLibraries(redis);
    const states = statesOn(redis);
    await prepare(states);
    const out: Record<string, number> = {};
    const control = (flag: string) => spawnSync('callgrind_control', [flag, String(vg.pid)], { encoding: 'utf8' });
    for (const s of SCENARIOS) {
      for (const f of fs.readdirSync(dir)) if (f.startsWith('cg.out.')) fs.rmSync(path.join(dir, f));
      control('-z');
      const r = spawnSync(
        'redis-benchmark',
        ['-h', '127.0.0.1', '-p', String(port), '-c', '10', '-n', String(requests), '-r', '100000000', ...s.args(states)],
        { encoding: 'utf8' },
      );
      if (r.status !== 0) throw new Error(`redis-benchmark failed: ${r.stderr}`);
      control('-d');
      const dump = fs.readdirSync(dir).find((f) => f.startsWith('cg.out.'));
      const total = dump && /^(?:summary|totals): (\d+)/m.exec(fs.readFileSync(path.join(dir, dump), 'utf8'));
      if (!total) throw new Error('no callgrind dump');
      out[s.name] = Math.round(Number(total[1]) / requests);
    }
    return out;
  } finally {
    redis.disconnect();
    vg.kill('SIGTERM');
    await new Promise((r) => vg.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const requests = Number(process.env.BENCH_REDIS_REQUESTS ?? 30000);
  const rounds = Number(process.env.BENCH_REDIS_ROUNDS ?? 7);
  const server = await startRedis();
  const redis = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  try {
    await redis.connect();
    await loadLibraries(redis);
    // Memory first, on an empty server.
    const memory = await memoryPerLease(redis, 10000, 2);
    const memoryLargePods = await memoryPerLease(redis, 10000, 100);
    const states = statesOn(redis);
    await prepare(states);
    const scenarios = SCENARIOS;
    for (const s of scenarios) await checkScenario(redis, s, states);

    // This machine is shared and noisy, so every scenario is measured between two
    // INCR runs and its ratio taken against their mean; rounds interleave all
    // scenarios and the median round is reported. Server CPU per call (INFO
    // commandstats) is reported too: it does not depend on the client or the load.
    const ratios: Record<string, number[]> = {};
    const samples: Record<string, Throughput[]> = {};
    const usec: Record<string, number[]> = {};
    const cpu: Record<string, number[]> = {};
    const measure = async (name: string, args: string[], command: string) => {
      await redis.config('RESETSTAT');
      const cpu0 = await serverCpu(redis);
      const t = benchmark(server.port, requests, args);
      (cpu[name] ??= []).push((((await serverCpu(redis)) - cpu0) * 1e6) / requests);
      (usec[name] ??= []).push(await usecPerCall(redis, command));
      (samples[name] ??= []).push(t);
      return t.rps;
    };
    const incrRun = () => measure('incr', SCENARIOS[0].args(states), 'incr');
    for (let round = 0; round < rounds; round++) {
      let before = await incrRun();
      for (const s of scenarios.slice(1)) {
        const rps = await measure(s.name, s.args(states), 'fcall');
        const after = await incrRun();
        (ratios[s.name] ??= []).push(rps / ((before + after) / 2));
        before = after;
      }
    }
    const round3 = (x: number) => Math.round(x * 1000) / 1000;
    const throughput: Record<string, unknown> = {};
    const incr = median(samples.incr.map((t) => t.rps));
    const incrCpu = median(cpu.incr);
    for (const s of scenarios) {
      throughput[s.name] = {
        what: s.what,
        rps: Math.round(median(samples[s.name].map((t) => t.rps))),
        ratioToIncr: s.name === 'incr' ? 1 : round3(median(ratios[s.name])),
        roundRatios: (ratios[s.name] ?? []).map(round3),
        cpuRatioToIncr: round3(incrCpu / median(cpu[s.name])),
        serverUsecPerCall: Math.round(median(usec[s.name]) * 100) / 100,
        // CPU the server spent per request, network I/O included: what bounds
        // throughput once Redis is the bottleneck, and not skewed by other load.
        serverCpuUsPerRequest: Math.round(median(cpu[s.name]) * 100) / 100,
        p50Ms: median(samples[s.name].map((t) => t.p50Ms)),
        p99Ms: median(samples[s.name].map((t) => t.p99Ms)),
      };
    }
    // Correctness under load: the refusal scenarios stayed refusals.
    const stats = await redis.hgetall(states.full.keys.stats);

    const info = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1];
    let instructions: Record<string, unknown> | undefined;
    if (process.env.BENCH_REDIS_CALLGRIND === '1') {
      const counts = await instructionCounts();
      instructions = Object.fromEntries(
        Object.entries(counts).map(([k, v]) => [k, { perRequest: v, xIncr: Math.round((v / counts.incr) * 10) / 10 }]),
      );
    }
    return {
      redisVersion: info,
      method: `redis-benchmark -c 50 -P 1 -n ${requests} per run; each scenario between two INCR runs, ratio to their mean; median of ${rounds} interleaved rounds; one redis-server`,
      incrRps: Math.round(incr),
      admitRps: (throughput.admit as { rps: number }).rps,
      admitRatio: (throughput.admit as { ratioToIncr: number }).ratioToIncr,
      refuseRps: (throughput.refuseFull as { rps: number }).rps,
      refuseRatio: (throughput.refuseFull as { ratioToIncr: number }).ratioToIncr,
      throughput,
      statsAfterLoad: stats,
      memoryPerLease: memory,
      memoryPerLease100PerPod: memoryLargePods,
      ...(instructions ? { userInstructionsPerRequest: instructions } : {}),
      targets: { admitRatio: 0.45, refuseRatio: 0.8, bytesPerLease: 150 },
    };
  } finally {
    redis.disconnect();
    await server.stop();
  }
}

function report(r: Record<string, unknown>): string {
  const lines = [`Redis ${String(r.redisVersion)}: ${String(r.method)}`];
  for (const [name, t] of Object.entries(
    r.throughput as Record<
      string,
      {
        what: string;
        rps: number;
        ratioToIncr: number;
        cpuRatioToIncr: number;
        serverUsecPerCall: number;
        serverCpuUsPerRequest: number;
        p50Ms: number;
        p99Ms: number;
        roundRatios: number[];
      }
    >,
  )) {
    lines.push(
      `  ${name.padEnd(18)} ${String(t.rps).padStart(7)} ops/s  ${t.ratioToIncr.toFixed(3)}x INCR  (server CPU ${t.serverCpuUsPerRequest} us/req, ${t.cpuRatioToIncr.toFixed(3)}x; command ${t.serverUsecPerCall} us)  p50 ${t.p50Ms} ms p99 ${t.p99Ms} ms` +
        (t.roundRatios.length ? `  rounds ${t.roundRatios.join(' ')}` : ''),
    );
    lines.push(`  ${''.padEnd(18)} ${t.what}`);
  }
  for (const key of ['memoryPerLease', 'memoryPerLease100PerPod']) {
    const m = r[key] as Record<string, string | number>;
    lines.push(
      `  memory: ${m.leases} leases on ${m.pods} pods (${m.perPod} per pod, leases ${m.leasesEncoding}), id ${m.connectionIdBytes} B ('${m.sampleConnectionId}'):` +
        ` MEMORY USAGE ${m.memoryUsageBytesPerLease} B/lease, used_memory delta ${m.usedMemoryDeltaBytesPerLease} B/lease;` +
        ` per pod ${Object.entries(m.bytesPerPod as unknown as Record<string, number>)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')} B`,
    );
  }
  if (r.userInstructionsPerRequest) {
    lines.push(
      '  user-space instructions per request (callgrind): ' +
        Object.entries(r.userInstructionsPerRequest as Record<string, { perRequest: number; xIncr: number }>)
          .map(([k, v]) => `${k} ${v.perRequest} (${v.xIncr}x)`)
          .join(', '),
    );
  }
  lines.push(`  targets: admit >= 0.45x (${String(r.admitRatio)}), refuse >= 0.8x (${String(r.refuseRatio)}), < 150 B/lease`);
  return lines.join('\n');
}

runAlone(module, run, (r) => (process.argv.includes('--json') ? `${report(r)}\n${JSON.stringify(r, null, 2)}` : report(r)));
