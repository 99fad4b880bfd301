import { spawn, ChildProcess } from 'child_process';
import Redis from 'ioredis';
import { RedisServer } from '../../tools/rig/redis-server';

/** One command Redis ran, as MONITOR shows it. */
export interface Seen {
  /** `127.0.0.1:<port>` of the client that sent it, or `lua` for a call made inside a function. */
  readonly client: string;
  readonly args: string[];
}

/** MONITOR's line `<ts> [<db> <client>] "ARG" "ARG" ...` (Redis escapes `"`, `\` and control bytes). */
function parse(line: string): Seen | undefined {
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
  if (!m) return undefined;
  const args = [...m[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]);
  return { client: m[1], args };
}

/**
 * Every command a Redis runs (`redis-cli MONITOR` as the admin), calls inside functions
 * included. `mark()` is a position after which the commands sent from now on appear; it
 * waits for an ECHO of its own to come through, so no sleep decides what "so far" is.
 */
export class Monitor {
  private out = '';
  private marks = 0;

  private constructor(
    private readonly proc: ChildProcess,
    private readonly admin: Redis,
    private readonly adminAddr: string,
  ) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString();
    });
  }

  static async start(server: RedisServer, admin: Redis): Promise<Monitor> {
    const auth = server.users ? ['--user', server.users.admin.name, '--pass', server.users.admin.password, '--no-auth-warning'] : [];
    const proc = spawn('redis-cli', ['-p', String(server.port), ...auth, 'MONITOR'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const info = String(await admin.call('CLIENT', 'INFO'));
    const addr = /(?:^| )addr=(\S+)/.exec(info)?.[1] ?? '';
    const m = new Monitor(proc, admin, addr);
    // redis-cli prints OK once MONITOR is on; what is sent before that is not shown.
    const deadline = Date.now() + 10000;
    while (!m.out.startsWith('OK')) {
      if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`redis-cli MONITOR did not start: ${m.out}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return m;
  }

  /** A position in the stream: everything sent before this call is before it. */
  async mark(): Promise<number> {
    const token = `monitor-mark-${++this.marks}`;
    await this.admin.echo(token);
    const deadline = Date.now() + 10000;
    for (;;) {
      const at = this.out.indexOf(`"${token}"`); // (ioredis sends its commands in lower case)
      if (at >= 0) return this.out.indexOf('\n', at) + 1;
      if (Date.now() > deadline) throw new Error(`MONITOR did not show ${token} within 10 s`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Everything Redis ran since `from` (a mark), up to now (waits for a mark). */
  async since(from = 0): Promise<Seen[]> {
    const to = await this.mark();
    return this.out
      .slice(from, to)
      .split('\n')
      .map(parse)
      .filter((s): s is Seen => s !== undefined && !(s.args[0]?.toUpperCase() === 'ECHO' && s.args[1]?.startsWith('monitor-mark-')));
  }

  /** The commands clients other than the test's admin connection sent since `from` (no function internals). */
  async clientCommands(from = 0): Promise<string[][]> {
    return (await this.since(from)).filter((s) => s.client !== 'lua' && s.client !== this.adminAddr).map((s) => s.args);
  }

  stop(): void {
    this.proc.kill();
  }
}
