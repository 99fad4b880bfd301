import { LongRunning, ProcessRunner, RunOptions, RunResult } from '../../tools/lib/process';
import { Clock } from '../../tools/lib/wait';

export type Answer = Partial<RunResult> | ((args: readonly string[], opts?: RunOptions) => Partial<RunResult>);

/**
 * A ProcessRunner that answers from a table keyed by the command line's start
 * ("kubectl get deployments"). The longest matching key wins; unmatched commands
 * answer "not installed" (like an empty PATH). Every call is recorded.
 */
export class FakeRunner implements ProcessRunner {
  readonly calls: Array<{ cmd: string; args: readonly string[]; env?: NodeJS.ProcessEnv }> = [];
  private readonly table = new Map<string, Answer[]>();
  started: Array<{ cmd: string; args: readonly string[]; stopped: boolean }> = [];
  startOutput = 'Forwarding from 127.0.0.1:40123 -> 9901\n';

  /** Answers in order; the last one repeats. */
  on(prefix: string, ...answers: Answer[]): this {
    this.table.set(prefix, answers);
    return this;
  }

  async run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    this.calls.push({ cmd, args, env: opts?.env });
    const line = [cmd.split('/').pop(), ...args].join(' ');
    const key = [...this.table.keys()].filter((k) => line === k || line.startsWith(`${k} `)).sort((a, b) => b.length - a.length)[0];
    if (key === undefined) return { code: 127, stdout: '', stderr: `${cmd}: not found`, notFound: true };
    const answers = this.table.get(key)!;
    const a = answers.length > 1 ? answers.shift()! : answers[0];
    const r = typeof a === 'function' ? a(args, opts) : a;
    return { code: 0, stdout: '', stderr: '', notFound: false, ...r };
  }

  start(cmd: string, args: readonly string[]): LongRunning {
    const entry = { cmd, args, stopped: false };
    this.started.push(entry);
    const out = this.startOutput;
    return {
      exited: new Promise<number>(() => undefined),
      async waitForOutput(pattern: RegExp): Promise<string> {
        const line = out.split('\n').find((l) => pattern.test(l));
        if (!line) throw new Error(`${cmd} exited (code 1) before it was ready: ${out.trim()}`);
        return line;
      },
      async stop(): Promise<void> {
        entry.stopped = true;
      },
    };
  }

  commandLines(): string[] {
    return this.calls.map((c) => [c.cmd.split('/').pop(), ...c.args].join(' '));
  }
}

/** A clock whose sleep returns at once and moves time forward. */
export class FakeClock implements Clock {
  constructor(public t = Date.UTC(2026, 10, 26, 6, 0, 0)) {}
  now(): number {
    return this.t;
  }
  async sleep(ms: number): Promise<void> {
    this.t += ms;
  }
}

export const ok = (stdout: unknown): Partial<RunResult> => ({
  code: 0,
  stdout: typeof stdout === 'string' ? stdout : JSON.stringify(stdout),
});
export const fail = (stderr: string, code = 1): Partial<RunResult> => ({ code, stderr });
