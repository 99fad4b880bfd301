import { formatDuration } from './wait';

/** Where the tools write what they are doing; a TTY gets one updating line, a log gets lines. */
export interface Reporter {
  step(title: string): void;
  progress(what: string, elapsedMs: number, detail: string): void;
  ok(message: string): void;
  fail(message: string): void;
  skip(message: string): void;
  info(message: string): void;
}

export interface StreamLike {
  write(s: string): unknown;
  readonly isTTY?: boolean;
}

/**
 * Plain text, no colours unless the stream is a TTY. On a TTY the waiting line is
 * rewritten in place; elsewhere (CI logs) one line is printed at most every 15 s.
 */
export class ConsoleReporter implements Reporter {
  private lastLogged = new Map<string, number>();
  private pending = false;

  constructor(private readonly out: StreamLike = process.stdout) {}

  private get tty(): boolean {
    return Boolean(this.out.isTTY);
  }

  private flush(): void {
    if (this.pending) {
      this.out.write('\r\x1b[2K');
      this.pending = false;
    }
  }

  step(title: string): void {
    this.flush();
    this.out.write(`\n${this.tty ? '\x1b[1m' : ''}==> ${title}${this.tty ? '\x1b[0m' : ''}\n`);
  }

  progress(what: string, elapsedMs: number, detail: string): void {
    const line = `    … waiting for ${what} (${formatDuration(elapsedMs)})${detail ? `: ${detail}` : ''}`;
    if (this.tty) {
      const width = (process.stdout.columns ?? 100) - 1;
      this.out.write(`\r\x1b[2K${line.length > width ? line.slice(0, width - 1) + '…' : line}`);
      this.pending = true;
      return;
    }
    const prev = this.lastLogged.get(what);
    if (prev === undefined || elapsedMs - prev >= 15000) {
      this.lastLogged.set(what, elapsedMs);
      this.out.write(`${line}\n`);
    }
  }

  ok(message: string): void {
    this.flush();
    this.out.write(`    ${this.tty ? '\x1b[32m✓\x1b[0m' : 'ok'} ${message}\n`);
  }
  fail(message: string): void {
    this.flush();
    this.out.write(`    ${this.tty ? '\x1b[31m✗\x1b[0m' : 'FAIL'} ${message}\n`);
  }
  skip(message: string): void {
    this.flush();
    this.out.write(`    ${this.tty ? '\x1b[2m-' : '--'} ${message}${this.tty ? '\x1b[0m' : ''}\n`);
  }
  info(message: string): void {
    this.flush();
    this.out.write(`    ${message}\n`);
  }
}

/** Collects everything, for tests. */
export class MemoryReporter implements Reporter {
  readonly lines: string[] = [];
  step(title: string): void {
    this.lines.push(`==> ${title}`);
  }
  progress(what: string, elapsedMs: number, detail: string): void {
    this.lines.push(`… ${what} ${elapsedMs}ms ${detail}`);
  }
  ok(message: string): void {
    this.lines.push(`ok ${message}`);
  }
  fail(message: string): void {
    this.lines.push(`FAIL ${message}`);
  }
  skip(message: string): void {
    this.lines.push(`skip ${message}`);
  }
  info(message: string): void {
    this.lines.push(message);
  }
}
