import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ts from 'typescript';
import Redis from 'ioredis';
import type { WorkerConfig, WorkerResult } from './race-worker';

const REPO = path.resolve(__dirname, '..', '..', '..');

/**
 * Transpiles race-worker.ts and its one import to plain JS in a temp dir (no
 * ts-node here; compiled *.js stay out of the repo) and returns the entry file.
 */
export function buildWorker(): { entry: string; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-race-'));
  for (const name of ['race-worker', 'functions']) {
    const src = fs.readFileSync(path.join(__dirname, `${name}.ts`), 'utf8');
    const out = ts.transpileModule(src, {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    });
    fs.writeFileSync(path.join(dir, `${name}.js`), out.outputText);
  }
  return { entry: path.join(dir, 'race-worker.js'), dir };
}

/**
 * Starts one OS process per config, waits until every one is connected, releases
 * them together and collects their results. Each process is killed on timeout.
 */
export async function runWorkers(
  entry: string,
  configs: readonly WorkerConfig[],
  opts: {
    timeoutMs?: number;
    onStarted?: () => void | Promise<void>;
    /** Called with the child processes once all are running (e.g. to kill one). */
    onRunning?: (children: ChildProcess[]) => void | Promise<void>;
    /** A worker killed by a signal (by onRunning, not by the timeout) reports nothing and is left out. */
    killedLeaveNoResult?: boolean;
  } = {},
): Promise<WorkerResult[]> {
  const children = configs.map((cfg) =>
    spawn(process.execPath, [entry, JSON.stringify(cfg)], {
      env: { ...process.env, NODE_PATH: path.join(REPO, 'node_modules') },
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  const outputs = children.map(() => '');
  const timeoutMs = opts.timeoutMs ?? 20000;
  let timedOut = false;
  const timeoutNote = () => (timedOut ? `; the ${timeoutMs} ms timeout had fired` : '');
  const ready = children.map(
    (c, i) =>
      new Promise<void>((resolve, reject) => {
        c.stdout.on('data', (d: Buffer) => {
          outputs[i] += d.toString();
          if (outputs[i].includes('READY\n')) resolve();
        });
        c.once('exit', (code, signal) =>
          reject(new Error(`worker ${i} exited (${signal ? `signal ${signal}` : `code ${code}`}${timeoutNote()}) before READY`)),
        );
      }),
  );
  // 'close', not 'exit': 'exit' can fire before the child's stdout is drained, and
  // the result line would be lost (seen in CI: 9 results from 10 workers).
  const closed = children.map(
    (c) =>
      new Promise<string>((resolve) => {
        c.once('close', (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code}`));
      }),
  );
  const timer = setTimeout(() => {
    timedOut = true;
    children.forEach((c) => c.kill('SIGKILL'));
  }, timeoutMs);
  try {
    await Promise.all(ready);
    await opts.onStarted?.();
    for (const c of children) c.stdin.write('go\n');
    await opts.onRunning?.(children);
    const ends = await Promise.all(closed);
    return outputs.flatMap((o, i) => {
      const line = o.split('\n').find((l) => l.startsWith('{'));
      if (line) return [JSON.parse(line) as WorkerResult];
      if (opts.killedLeaveNoResult && !timedOut && ends[i].startsWith('signal')) return [];
      const why = `ended (${ends[i]}${timeoutNote()})`;
      throw new Error(`worker ${i} (${configs[i].proxy}) ${why} without a result; stdout: ${JSON.stringify(o)}`);
    });
  } finally {
    clearTimeout(timer);
    children.forEach((c) => {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
  }
}

/** One command Redis executed, in execution order (MONITOR). */
export interface Executed {
  readonly time: number;
  readonly args: string[];
  /** Run by a function of the library (MONITOR's source "lua"), not sent by a client. */
  readonly fromFunction: boolean;
}

/**
 * Records every command Redis executes, including the ones functions run (MONITOR
 * reports them with source "lua"), in the server's own execution order. Replaying
 * that log reconstructs every state a key went through, which a poller sampling
 * ZCARD cannot.
 */
export async function recordCommands(
  port: number,
  auth: { username?: string; password?: string } = {},
): Promise<{ stop(): Promise<Executed[]> }> {
  const control = new Redis({ host: '127.0.0.1', port, lazyConnect: true, ...auth });
  await control.connect();
  const monitor = await control.monitor();
  const log: Executed[] = [];
  const marker = `audit-end-${process.pid}-${Date.now()}`;
  let done: () => void;
  const finished = new Promise<void>((r) => {
    done = r;
  });
  monitor.on('monitor', (time: string, args: string[], source: string) => {
    if (args[0]?.toLowerCase() === 'echo' && args[1] === marker) done();
    else log.push({ time: Number(time), args, fromFunction: source === 'lua' });
  });
  return {
    async stop() {
      const pinger = new Redis({ host: '127.0.0.1', port, ...auth });
      await pinger.echo(marker);
      await finished;
      pinger.disconnect();
      monitor.disconnect();
      control.disconnect();
      return log;
    },
  };
}

/**
 * Replays the writes to the leases set (`leasesKey`, members "<connection id> <pod>")
 * and returns, per pod, the largest number of leases it ever held at once (expired ones
 * not yet given back included) and its final members' connection ids.
 */
export function replayLeases(log: readonly Executed[], leasesKey: string) {
  const set = new Map<string, number>();
  const perPod = new Map<string, number>();
  const max = new Map<string, number>();
  const podOf = (m: string) => m.slice(m.indexOf(' ') + 1);
  const add = (m: string) => {
    if (set.has(m)) return;
    const pod = podOf(m);
    perPod.set(pod, (perPod.get(pod) ?? 0) + 1);
    max.set(pod, Math.max(max.get(pod) ?? 0, perPod.get(pod)!));
  };
  const remove = (m: string) => {
    if (!set.has(m)) return;
    set.delete(m);
    perPod.set(podOf(m), perPod.get(podOf(m))! - 1);
  };
  for (const { args } of log) {
    if (args[1] !== leasesKey) continue;
    const cmd = args[0].toUpperCase();
    if (cmd === 'ZADD') {
      let i = 2;
      while (i < args.length && /^(NX|XX|GT|LT|CH)$/i.test(args[i])) i++;
      for (; i + 1 < args.length; i += 2) {
        add(args[i + 1]);
        set.set(args[i + 1], Number(args[i]));
      }
    } else if (cmd === 'ZREM') {
      for (const m of args.slice(2)) remove(m);
    } else if (cmd === 'DEL' || cmd === 'UNLINK') {
      for (const m of [...set.keys()]) remove(m);
    } else if (!/^(ZRANGE|ZCARD|ZSCORE|ZCOUNT|ZRANGEBYSCORE|ZSCAN|EXISTS|TYPE)$/.test(cmd)) {
      throw new Error(`replay: unexpected command on ${leasesKey}: ${args.join(' ')}`);
    }
  }
  const final = new Map<string, string[]>();
  for (const m of set.keys()) final.set(podOf(m), [...(final.get(podOf(m)) ?? []), m.slice(0, m.indexOf(' '))]);
  return { max, final };
}
