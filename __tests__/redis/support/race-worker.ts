/**
 * One "proxy" of the multi-process race tests: its own OS process and its own Redis
 * connection, like one Envoy worker. Started by workers.ts (transpiled to a temp
 * dir), it registers its proxy's healthy hosts (as the proxy's agent does), prints READY,
 * waits for a line on stdin, runs, and prints one JSON line.
 */
import Redis from 'ioredis';
import { AdmitReply, Functions } from './functions';

export interface WorkerConfig {
  readonly port: number;
  readonly tag: string;
  readonly proxy: string;
  /** hold: admit `attempts` times per loop, never release. churn: admit, hold, release until `durationMs`. rate: admit as fast as allowed until `durationMs`. */
  readonly mode: 'hold' | 'churn' | 'rate';
  readonly loops: number;
  readonly attempts?: number;
  readonly durationMs?: number;
  readonly holdMs?: readonly [number, number];
  /** The proxy's healthy hosts, registered once before the run (ws_hosts). */
  readonly pods: readonly string[];
  readonly maxPerPod: number;
  readonly rateLimit: number;
  readonly windowMs: number;
  readonly ttlMs: number;
}

export interface WorkerResult {
  proxy: string;
  attempts: number;
  admitted: { id: string; pod: string; activeOnPod: number }[];
  refused: Record<string, number>;
  releasedOk: number;
  releaseLost: string[];
  errors: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as WorkerConfig;
  const redis = new Redis({ host: '127.0.0.1', port: cfg.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await redis.connect();
  // The library is loaded and the state started by the test; this process only calls it.
  const f = new Functions(redis, cfg.tag);
  const res: WorkerResult = { proxy: cfg.proxy, attempts: 0, admitted: [], refused: {}, releasedOk: 0, releaseLost: [], errors: [] };
  let counter = 0;

  const attempt = async (loop: number): Promise<AdmitReply & { id: string }> => {
    const id = `${cfg.proxy}|${loop}|${(counter++).toString(36)}|${rand(0, 1295).toString(36)}`;
    res.attempts++;
    const r = await f.admitOnce({ rateLimit: cfg.rateLimit, windowMs: cfg.windowMs, maxPerPod: cfg.maxPerPod, ttlMs: cfg.ttlMs, id });
    if (r.status === 'ADMITTED') res.admitted.push({ id, pod: r.pod, activeOnPod: r.activeOnPod });
    else res.refused[r.status] = (res.refused[r.status] ?? 0) + 1;
    return { ...r, id };
  };

  const loop = async (l: number): Promise<void> => {
    const deadline = Date.now() + (cfg.durationMs ?? 0);
    if (cfg.mode === 'hold') {
      for (let i = 0; i < (cfg.attempts ?? 1); i++) await attempt(l);
      return;
    }
    while (Date.now() < deadline) {
      const r = await attempt(l);
      if (cfg.mode === 'churn' && r.status === 'ADMITTED') {
        const [lo, hi] = cfg.holdMs ?? [1, 5];
        await sleep(rand(lo, hi));
        if ((await f.release(r.id, r.pod)) === 1) res.releasedOk++;
        else res.releaseLost.push(r.id);
      } else if (r.status !== 'ADMITTED') {
        await sleep(1); // keep demand above supply without spinning the CPU away from Redis
      }
    }
  };

  try {
    await f.reach(cfg.proxy, cfg.pods);
  } catch (e) {
    res.errors.push(`host registration: ${String(e)}`);
  }
  process.stdout.write('READY\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  try {
    await Promise.all(Array.from({ length: cfg.loops }, (_, l) => loop(l)));
  } catch (e) {
    res.errors.push(String(e));
  }
  process.stdout.write(JSON.stringify(res) + '\n');
  redis.disconnect();
  process.stdin.pause();
}

void main();
