import { LongRunning, ProcessRunner, RunOptions, RunResult } from '../../tools/common/process';
import { Clock } from '../../tools/common/wait';

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

/** The deploy target of the deploy and prerequisite tests. */
export const IMAGE = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-1';
export const TARGET = { clusterName: 'ws-eks', region: 'eu-west-1', envoyImage: IMAGE };

/** Every prerequisite present and healthy. */
export function healthyRunner(): FakeRunner {
  return new FakeRunner()
    .on('terraform version -json', ok({ terraform_version: '1.9.8' }))
    .on('aws --version', ok('aws-cli/2.17.0 Python/3.11\n'))
    .on('aws sts get-caller-identity', ok({ Account: '123456789012', Arn: 'arn:aws:sts::123456789012:assumed-role/dev/me' }))
    .on('aws eks describe-cluster', ok({ cluster: { status: 'ACTIVE', version: '1.31' } }))
    .on('kubectl version --client', ok({ clientVersion: { gitVersion: 'v1.31.2' } }))
    .on('kubectl config current-context', ok('arn:aws:eks:eu-west-1:123456789012:cluster/ws-eks\n'))
    .on('kubectl get --raw /readyz', ok('ok'))
    .on('aws ecr describe-images', ok({ imageDetails: [{ imageTags: ['1.36.2-1'] }] }))
    .on('kubectl get deployment -n kube-system aws-load-balancer-controller', ok({ status: { readyReplicas: 2, replicas: 2 } }));
}
