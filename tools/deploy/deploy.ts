/**
 * `npm run deploy` / `npm run destroy`: checked deploys of the CDK for Terraform app.
 *
 * deploy:  prerequisites -> cdktf deploy -> rollouts ready -> NLB hostname -> DNS ->
 *          HTTP through the NLB -> one WebSocket upgrade (101) -> outputs
 * destroy: prerequisites -> cdktf destroy -> the LoadBalancer Service is gone
 *
 * Every wait has a timeout; a failure exits non-zero and names the failing step.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs } from 'util';
import { loadConfig } from '../../config/load';
import { ConsoleReporter, Reporter } from '../common/progress';
import { CheckResult, PREREQUISITE_NAMES, Target, checkPrerequisites } from '../common/prereqs';
import { NodeProcessRunner, ProcessRunner, formatCommand } from '../common/process';
import { DEFAULT_NAMESPACE, cdktfOutDir, chooseStack, findOutput, readOutputsFile, synthesizedStacks } from '../common/stack-info';
import {
  NetProbes,
  VerifyContext,
  realProbes,
  waitForDns,
  waitForHttp,
  waitForLoadBalancer,
  waitForLoadBalancerGone,
  waitForRollouts,
  waitForWebSocket,
} from './verify';
import { Clock, WaitTimeoutError, realClock } from '../common/wait';

export interface DeployDeps {
  readonly runner: ProcessRunner;
  readonly probes: NetProbes;
  readonly reporter: Reporter;
  readonly clock: Clock;
  readonly env: NodeJS.ProcessEnv;
  /** The repository root (where cdktf.json is). */
  readonly projectDir: string;
  readonly out: { write(s: string): unknown };
}

export interface DeployOptions {
  readonly mode: 'deploy' | 'destroy';
  readonly stack?: string;
  readonly target: Target;
  readonly namespace?: string;
  readonly timeoutMs: number;
  readonly intervalMs?: number;
  readonly healthPath: string;
  readonly wsPath: string;
  /** Only run the prerequisite checks. */
  readonly checkOnly: boolean;
  readonly skipVerify: boolean;
  /**
   * The NLB is internal (config nlbScheme): its address is only reachable from inside
   * the VPC, so the traffic checks run only when asked (--verify-internal).
   */
  readonly internalNlb?: boolean;
  readonly verifyInternal?: boolean;
  /**
   * The NLB terminates TLS (config nlbTls): the checks go to https:// and wss:// at the
   * name the certificate covers (nlbTlsHostname; none: skipped, the certificate cannot
   * cover the NLB's own name), and to the plain port only if it stayed open.
   */
  readonly tls?: { readonly port: number; readonly hostname: string; readonly keepPlainPort: boolean };
}

/** A step that failed; the message already says which and why. */
export class StepFailed extends Error {
  constructor(
    readonly step: string,
    message: string,
  ) {
    super(message);
    this.name = 'StepFailed';
  }
}

const USAGE = `usage: npm run deploy  -- [options]
       npm run destroy -- [options]

  --cluster NAME       EKS cluster (default: clusterName of the config)
  --region REGION      AWS region (default: region of the config)
  --image REF          the custom Envoy image (default: envoyImage of the config)
  --stack NAME         the cdktf stack (default: the only stack the app synthesizes)
  --namespace NS       where the stack deploys (default: namespace of the config)

The config is the stack's: defaults < the JSON file in $WS_ADMISSION_CONFIG <
WS_ADMISSION_* variables (see README, Configuration); flags here only override
what the checks and waits look at, not what is deployed.
  --timeout SECONDS    limit for each wait (default 600)
  --health-path PATH   HTTP path checked through the NLB (default /)
  --ws-path PATH       WebSocket path checked through the NLB (default /)
  --check              only check the prerequisites
  --skip-verify        deploy without the checks after it
  --verify-internal    run the traffic checks even though the NLB is internal
                       (only works from inside the VPC)
`;

/** The part of the stack's typed config the checks need. */
export interface ConfigView {
  readonly clusterName?: string;
  readonly region?: string;
  readonly namespace?: string;
  readonly envoyImage?: string;
  readonly nlbScheme?: string;
  readonly nlbSetIdleTimeout?: boolean;
  readonly nlbTls?: boolean;
  readonly nlbTlsPort?: number;
  readonly nlbTlsHostname?: string;
  readonly nlbKeepPlainPort?: boolean;
}

export function parseDeployArgs(
  argv: readonly string[],
  config: ConfigView,
  mode: 'deploy' | 'destroy',
): DeployOptions & { help: boolean } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      cluster: { type: 'string' },
      region: { type: 'string' },
      image: { type: 'string' },
      stack: { type: 'string' },
      namespace: { type: 'string', short: 'n' },
      timeout: { type: 'string', default: '600' },
      'health-path': { type: 'string', default: '/' },
      'ws-path': { type: 'string', default: '/' },
      check: { type: 'boolean', default: false },
      'skip-verify': { type: 'boolean', default: false },
      'verify-internal': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) throw new Error(`--timeout must be a positive number of seconds, got ${values.timeout}`);
  for (const k of ['health-path', 'ws-path'] as const) {
    if (!values[k].startsWith('/')) throw new Error(`--${k} must start with /, got ${values[k]}`);
  }
  return {
    mode,
    stack: values.stack,
    target: {
      clusterName: values.cluster ?? config.clusterName,
      region: values.region ?? config.region,
      envoyImage: values.image ?? config.envoyImage,
      nlbListenerAttributes: config.nlbSetIdleTimeout,
    },
    namespace: values.namespace ?? config.namespace,
    timeoutMs: timeout * 1000,
    healthPath: values['health-path'],
    wsPath: values['ws-path'],
    checkOnly: Boolean(values.check),
    skipVerify: Boolean(values['skip-verify']),
    internalNlb: config.nlbScheme === 'internal',
    tls: config.nlbTls
      ? { port: config.nlbTlsPort ?? 443, hostname: config.nlbTlsHostname ?? '', keepPlainPort: config.nlbKeepPlainPort ?? false }
      : undefined,
    verifyInternal: Boolean(values['verify-internal']),
    help: Boolean(values.help),
  };
}

function cdktfBin(projectDir: string): string {
  const local = path.join(projectDir, 'node_modules', '.bin', 'cdktf');
  return fs.existsSync(local) ? local : 'cdktf';
}

function reportChecks(reporter: Reporter, results: readonly CheckResult[]): CheckResult[] {
  const failedChecks: CheckResult[] = [];
  for (const r of results) {
    if (r.ok) reporter.ok(`${r.name}: ${r.detail}`);
    else if (r.skipped) reporter.skip(`${r.name}: ${r.detail}`);
    else {
      reporter.fail(`${r.name}: ${r.detail}`);
      if (r.fix) reporter.info(`  fix: ${r.fix}`);
      failedChecks.push(r);
    }
  }
  return failedChecks;
}

/** Runs deploy or destroy; answers the exit code. */
export async function runDeploy(opts: DeployOptions, deps: DeployDeps): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...deps.env, CHECKPOINT_DISABLE: '1' };
  try {
    await checkStep(opts, deps, env);
    if (opts.checkOnly) {
      deps.reporter.info('all prerequisites are met');
      return 0;
    }
    const stack = await synthStep(opts, deps, env);
    const outputs = await applyStep(opts, deps, env, stack);
    const namespace = opts.namespace ?? findOutput(outputs, 'namespace') ?? DEFAULT_NAMESPACE;
    const ctx: VerifyContext = { ...deps, env, timeoutMs: opts.timeoutMs, intervalMs: opts.intervalMs };
    if (opts.mode === 'destroy') {
      if (!opts.skipVerify) {
        deps.reporter.step('Waiting for the load balancer to be released');
        await step('destroy verification', () => waitForLoadBalancerGone(ctx, namespace));
        deps.reporter.ok('no LoadBalancer Service left');
      }
      deps.reporter.step('Destroyed');
      return 0;
    }
    if (!opts.skipVerify) await verifyStep(opts, ctx, namespace, outputs);
    printOutputs(deps, outputs);
    return 0;
  } catch (err) {
    const stepName = err instanceof StepFailed ? err.step : 'unexpected error';
    const message = err instanceof Error ? err.message : String(err);
    deps.out.write(`\n${opts.mode} failed at step "${stepName}": ${message}\n`);
    return 1;
  }
}

/** 1. Prerequisites: all of them, so one run lists everything that is missing. */
async function checkStep(opts: DeployOptions, deps: DeployDeps, env: NodeJS.ProcessEnv): Promise<void> {
  deps.reporter.step('Checking prerequisites');
  const needed = opts.mode === 'destroy' ? PREREQUISITE_NAMES.filter((n) => n !== 'Envoy image') : PREREQUISITE_NAMES;
  const failedChecks = reportChecks(deps.reporter, await checkPrerequisites(deps.runner, opts.target, env, needed));
  if (failedChecks.length) {
    const missing = failedChecks.filter((r) => !r.skipped).map((r) => r.name);
    throw new StepFailed(
      'prerequisites',
      `${missing.length} prerequisite${missing.length === 1 ? '' : 's'} missing: ${missing.join(', ')}`,
    );
  }
}

/** 2. Synthesize, to know the stack and to fail on a bad config before touching AWS; answers the stack. */
async function synthStep(opts: DeployOptions, deps: DeployDeps, env: NodeJS.ProcessEnv): Promise<string> {
  deps.reporter.step('Synthesizing the app (cdktf synth)');
  const synth = await deps.runner.run(cdktfBin(deps.projectDir), ['synth'], { env, cwd: deps.projectDir, inherit: true });
  if (synth.code !== 0) throw new StepFailed('synth', `cdktf synth failed (exit ${synth.code}); the configuration error is printed above`);
  const stack = chooseStack(opts.stack, synthesizedStacks(deps.projectDir, cdktfOutDir(deps.projectDir)));
  deps.reporter.ok(`stack ${stack}`);
  return stack;
}

/** 3. cdktf deploy/destroy, output streamed as it comes; answers the stack's outputs (none for destroy). */
async function applyStep(opts: DeployOptions, deps: DeployDeps, env: NodeJS.ProcessEnv, stack: string): Promise<Record<string, unknown>> {
  const outputsFile = path.join(os.tmpdir(), `ws-admission-outputs-${process.pid}.json`);
  const args =
    opts.mode === 'deploy' ? ['deploy', stack, '--auto-approve', '--outputs-file', outputsFile] : ['destroy', stack, '--auto-approve'];
  deps.reporter.step(`Running ${formatCommand('cdktf', args)}`);
  const applied = await deps.runner.run(cdktfBin(deps.projectDir), args, { env, cwd: deps.projectDir, inherit: true });
  if (applied.code !== 0)
    throw new StepFailed(opts.mode, `cdktf ${opts.mode} failed (exit ${applied.code}); terraform's error is printed above`);
  const outputs = opts.mode === 'deploy' ? readOutputsFile(outputsFile, stack) : {};
  // Read once; a later failing step must not leave the file behind in the temp dir.
  fs.rmSync(outputsFile, { force: true });
  return outputs;
}

/** 4. What was deployed works: rollouts ready, the NLB's name, DNS, then HTTP and one upgrade through it. */
async function verifyStep(opts: DeployOptions, ctx: VerifyContext, namespace: string, outputs: Record<string, unknown>): Promise<void> {
  const { reporter } = ctx;
  reporter.step(`Waiting for the rollouts in namespace ${namespace}`);
  const rolled = await step('rollouts', () => waitForRollouts(ctx, namespace));
  for (const r of rolled) reporter.ok(r);

  reporter.step('Waiting for the NLB');
  const host =
    findOutput(outputs, 'loadBalancerHostname', 'lbHostname', 'nlbHostname', 'loadBalancerDns', 'nlbDnsName') ??
    (await step('NLB hostname', () => waitForLoadBalancer(ctx, namespace)));
  reporter.ok(`hostname ${host}`);
  const addrs = await step('DNS', () => waitForDns(ctx, host));
  reporter.ok(`resolves to ${addrs.join(', ')}`);

  if (opts.internalNlb && !opts.verifyInternal) {
    reporter.skip(
      'traffic checks: the NLB is internal (nlbScheme), reachable only from inside the VPC; rerun there with --verify-internal',
    );
    return;
  }
  reporter.step('Checking traffic through the NLB');
  const check = async (http: string, ws: string, what: string): Promise<void> => {
    const status = await step(`HTTP health check${what}`, () => waitForHttp(ctx, `${http}${opts.healthPath}`));
    reporter.ok(`GET ${http}${opts.healthPath} answered ${status}`);
    await step(`WebSocket upgrade${what}`, () => waitForWebSocket(ctx, `${ws}${opts.wsPath}`));
    reporter.ok(`WebSocket upgrade at ${ws}${opts.wsPath} answered 101 (closed again at once)`);
  };
  const tls = opts.tls;
  if (!tls || tls.keepPlainPort) await check(`http://${host}`, `ws://${host}`, '');
  if (tls && tls.hostname === '') {
    reporter.skip(
      "TLS checks: nlbTlsHostname is not set, and the certificate cannot cover the NLB's own name; set it to the name your DNS points at the NLB",
    );
  } else if (tls) {
    // Through DNS, the certificate and the TLS listener: what a browser does.
    const authority = tls.port === 443 ? tls.hostname : `${tls.hostname}:${tls.port}`;
    await check(`https://${authority}`, `wss://${authority}`, ' (TLS)');
  }
}

/** 5. The stack's outputs, one per line. */
function printOutputs(deps: DeployDeps, outputs: Record<string, unknown>): void {
  deps.reporter.step('Outputs');
  const entries = Object.entries(outputs);
  if (entries.length === 0) deps.reporter.info('(the stack has no outputs, or cdktf wrote none)');
  const w = Math.max(0, ...entries.map(([k]) => k.length));
  for (const [k, v] of entries) deps.out.write(`    ${k.padEnd(w)}  ${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
}

/** Runs one wait and turns its timeout (or any error) into a StepFailed naming the step. */
async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StepFailed) throw err;
    if (err instanceof WaitTimeoutError) throw new StepFailed(name, err.message);
    throw new StepFailed(name, err instanceof Error ? err.message : String(err));
  }
}

export async function main(argv: readonly string[], mode: 'deploy' | 'destroy'): Promise<number> {
  let config: ConfigView;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`${mode} failed at step "configuration": ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  let opts: ReturnType<typeof parseDeployArgs>;
  try {
    opts = parseDeployArgs(argv, config, mode);
  } catch (err) {
    process.stderr.write(`${mode}: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  return runDeploy(opts, {
    runner: new NodeProcessRunner(),
    probes: realProbes,
    reporter: new ConsoleReporter(process.stdout),
    clock: realClock,
    env: process.env,
    projectDir: path.resolve(__dirname, '..', '..'),
    out: process.stdout,
  });
}

if (require.main === module) {
  void main(process.argv.slice(2), 'deploy').then((code) => process.exit(code));
}
