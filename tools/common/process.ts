import { spawn, ChildProcess } from 'child_process';

/** What one finished command gave back. */
export interface RunResult {
  /** Exit code; 127 when the program was not found, like a shell. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** True when the program is not installed (spawn ENOENT). */
  readonly notFound: boolean;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Kill the command after this long and answer code 124 (like `timeout(1)`). @default - no limit */
  readonly timeoutMs?: number;
  /** Stream the command's output to our stdout/stderr as it runs (still captured). @default false */
  readonly inherit?: boolean;
  /** Written to the command's stdin, which is then closed (secrets go here, never in argv). @default - no stdin */
  readonly input?: string;
}

/** A command that keeps running (kubectl port-forward) until we stop it. */
export interface LongRunning {
  /** Resolves with the first line of stdout that matches, rejects when the process exits first. */
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<string>;
  stop(): Promise<void>;
  readonly exited: Promise<number>;
}

/**
 * Everything the tools run goes through this, so tests can swap in a fake that
 * answers from a table instead of running terraform, aws or kubectl.
 */
export interface ProcessRunner {
  run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  start(cmd: string, args: readonly string[], opts?: RunOptions): LongRunning;
}

/** How long a timed-out command gets after SIGTERM (and again after SIGKILL). */
export const KILL_GRACE_MS = 2000;

/** The real thing: child_process.spawn, no shell (arguments are never re-parsed). */
export class NodeProcessRunner implements ProcessRunner {
  run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      let child: ChildProcess;
      try {
        child = spawn(cmd, [...args], {
          env: opts.env ?? process.env,
          cwd: opts.cwd,
          stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        });
      } catch (err) {
        resolve({ code: 127, stdout: '', stderr: String(err), notFound: true });
        return;
      }
      if (opts.input !== undefined) {
        child.stdin?.on('error', () => undefined);
        child.stdin?.end(opts.input);
      }
      // On timeout: SIGTERM, then SIGKILL after a grace period; answer 124 even if the
      // child's output pipes stay open (a grandchild holding them), so no caller hangs.
      let killer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = (r: RunResult): void => {
        if (finished) return;
        finished = true;
        if (timer) clearTimeout(timer);
        if (killer) clearTimeout(killer);
        resolve(r);
      };
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGTERM');
            killer = setTimeout(() => {
              child.kill('SIGKILL');
              killer = setTimeout(() => finish({ code: 124, stdout, stderr, notFound: false }), KILL_GRACE_MS);
            }, KILL_GRACE_MS);
          }, opts.timeoutMs)
        : undefined;
      child.stdout?.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (opts.inherit) process.stdout.write(d);
      });
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (opts.inherit) process.stderr.write(d);
      });
      child.on('error', (err: NodeJS.ErrnoException) => {
        finish({ code: 127, stdout, stderr: stderr + err.message, notFound: err.code === 'ENOENT' });
      });
      child.on('close', (code, signal) => {
        finish({ code: timedOut ? 124 : (code ?? (signal ? 128 : 1)), stdout, stderr, notFound: false });
      });
    });
  }

  start(cmd: string, args: readonly string[], opts: RunOptions = {}): LongRunning {
    const child = spawn(cmd, [...args], { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const exited = new Promise<number>((resolve) => {
      child.on('error', (e: NodeJS.ErrnoException) => {
        err += e.code === 'ENOENT' ? `${cmd} is not installed (not on PATH)` : e.message;
        resolve(127);
      });
      child.on('close', (code) => resolve(code ?? 1));
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    return {
      exited,
      waitForOutput(pattern: RegExp, timeoutMs: number): Promise<string> {
        return new Promise((resolve, reject) => {
          const check = (): boolean => {
            const line = out.split('\n').find((l) => pattern.test(l));
            if (line !== undefined) {
              cleanup();
              resolve(line);
              return true;
            }
            return false;
          };
          const onData = (): void => {
            check();
          };
          const timer = setTimeout(() => {
            cleanup();
            reject(
              new Error(
                `${cmd} printed nothing matching ${pattern} within ${Math.round(timeoutMs / 1000)} s${err ? `: ${err.trim()}` : ''}`,
              ),
            );
          }, timeoutMs);
          const cleanup = (): void => {
            clearTimeout(timer);
            child.stdout?.off('data', onData);
          };
          child.stdout?.on('data', onData);
          void exited.then((code) => {
            cleanup();
            reject(new Error(`${cmd} exited (code ${code}) before it was ready${err ? `: ${err.trim()}` : ''}`));
          });
          check();
        });
      },
      async stop(): Promise<void> {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
  }
}

/** `cmd a b` for messages, quoting what needs it. */
export function formatCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** The last meaningful line of a failed command's output, for one-line messages. */
export function lastLine(r: RunResult): string {
  const lines = `${r.stderr}\n${r.stdout}`
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.length ? lines[lines.length - 1] : `exit code ${r.code}`;
}
