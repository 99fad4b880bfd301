import { WaitTimeoutError, done, formatDuration, notYet, waitFor } from '../../../tools/common/wait';
import { FakeClock } from '../../support/fakes';

describe('waitFor', () => {
  it('returns the value once the probe is done', async () => {
    const clock = new FakeClock();
    let n = 0;
    const v = await waitFor('x', async () => (++n < 3 ? notYet(`try ${n}`) : done('yes')), { timeoutMs: 60000, intervalMs: 1000, clock });
    expect(v).toBe('yes');
    expect(n).toBe(3);
  });

  it('times out with what it waited for and the last thing it saw', async () => {
    const clock = new FakeClock();
    const progress: string[] = [];
    const p = waitFor('the Deployments to be rolled out', async () => notYet('ws-envoy: 1/2 replicas available'), {
      timeoutMs: 10000,
      intervalMs: 2000,
      clock,
      onProgress: (e, d) => progress.push(`${e}:${d}`),
    });
    await expect(p).rejects.toThrow(WaitTimeoutError);
    await expect(p).rejects.toThrow(
      'timed out after 10 s waiting for the Deployments to be rolled out (last seen: ws-envoy: 1/2 replicas available)',
    );
    expect(progress.length).toBeGreaterThanOrEqual(5);
  });

  it('treats a throwing probe as not yet and reports its error', async () => {
    const clock = new FakeClock();
    await expect(
      waitFor(
        'DNS',
        async () => {
          throw new Error('getaddrinfo ENOTFOUND x');
        },
        { timeoutMs: 3000, intervalMs: 1000, clock },
      ),
    ).rejects.toThrow('(last seen: getaddrinfo ENOTFOUND x)');
  });

  it('ends at its deadline when one check hangs, saying so', async () => {
    let n = 0;
    const p = waitFor(
      'an HTTP answer (< 500) from http://nlb/',
      () => (++n === 1 ? Promise.resolve(notYet('HTTP 503')) : new Promise<never>(() => undefined)),
      { timeoutMs: 300, intervalMs: 50 },
    );
    await expect(p).rejects.toThrow(WaitTimeoutError);
    await expect(p).rejects.toThrow(
      'timed out after 0 s waiting for an HTTP answer (< 500) from http://nlb/ (last seen: HTTP 503; then a check did not answer within the time left)',
    );
    expect(n).toBe(2);
  });

  it('formats durations for people', () => {
    expect(formatDuration(5000)).toBe('5 s');
    expect(formatDuration(600000)).toBe('10 min');
    expect(formatDuration(90000)).toBe('1 min 30 s');
  });
});
