/** Time source and sleep, injectable so tests run waits instantly. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** What a probe says on one try: done (with a value) or not yet (with why). */
export type ProbeResult<T> = { readonly done: true; readonly value: T } | { readonly done: false; readonly detail: string };

export const done = <T>(value: T): ProbeResult<T> => ({ done: true, value });
export const notYet = (detail: string): ProbeResult<never> => ({ done: false, detail });

/** A wait that ran out of time; the message says what was awaited and the last thing seen. */
export class WaitTimeoutError extends Error {
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly lastDetail: string,
  ) {
    super(`timed out after ${formatDuration(timeoutMs)} waiting for ${what}${lastDetail ? ` (last seen: ${lastDetail})` : ''}`);
    this.name = 'WaitTimeoutError';
  }
}

export interface WaitOptions {
  readonly timeoutMs: number;
  /** @default 2000 */
  readonly intervalMs?: number;
  readonly clock?: Clock;
  /** Called after every unsuccessful try, for progress output. */
  readonly onProgress?: (elapsedMs: number, detail: string) => void;
}

/**
 * Polls `probe` until it is done or `timeoutMs` has passed. A probe that throws counts
 * as "not yet" with the error as detail: transient failures (DNS not yet there,
 * connection refused) are what we wait through.
 */
export async function waitFor<T>(what: string, probe: () => Promise<ProbeResult<T>>, opts: WaitOptions): Promise<T> {
  const clock = opts.clock ?? realClock;
  const interval = opts.intervalMs ?? 2000;
  const start = clock.now();
  let last = '';
  for (;;) {
    let r: ProbeResult<T>;
    // One try may not outlast the wait: a probe that hangs (a stuck connection, a
    // command that never exits) ends the wait at its deadline like any other "not yet".
    const remaining = Math.max(0, opts.timeoutMs - (clock.now() - start));
    let guard: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => {
      guard = setTimeout(() => resolve('deadline'), remaining);
      guard.unref?.();
    });
    try {
      const first = await Promise.race([probe(), deadline]);
      if (first === 'deadline') {
        throw new WaitTimeoutError(what, opts.timeoutMs, `${last ? `${last}; then ` : ''}a check did not answer within the time left`);
      }
      r = first;
    } catch (err) {
      if (err instanceof WaitTimeoutError) throw err;
      r = notYet(err instanceof Error ? err.message : String(err));
    } finally {
      clearTimeout(guard);
    }
    if (r.done) return r.value;
    last = r.detail;
    const elapsed = clock.now() - start;
    opts.onProgress?.(elapsed, last);
    if (elapsed + interval > opts.timeoutMs) throw new WaitTimeoutError(what, opts.timeoutMs, last);
    await clock.sleep(interval);
  }
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
}
