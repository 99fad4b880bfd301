// tools/deploy/deploy.ts (`npm run deploy` / `npm run destroy`): runDeploy's steps against a fake
// runner, fake network probes and a fake clock, and the command line. The prerequisite
// checks themselves: prereqs.test.ts.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DeployOptions, parseDeployArgs, runDeploy } from '../../../tools/deploy/deploy';
import { MemoryReporter } from '../../../tools/common/progress';
import { NetProbes } from '../../../tools/deploy/verify';
import { FakeClock, FakeRunner, TARGET, fail, healthyRunner, ok } from '../../support/fakes';

describe('npm run deploy', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deploy-test-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const opts = (o: Partial<DeployOptions> = {}): DeployOptions => ({
    mode: 'deploy',
    target: TARGET,
    timeoutMs: 20000,
    intervalMs: 1000,
    healthPath: '/',
    wsPath: '/',
    checkOnly: false,
    skipVerify: false,
    namespace: undefined,
    ...o,
  });

  const deployment = (name: string, want: number, available: number) => ({
    metadata: { name, generation: 2 },
    spec: { replicas: want },
    status: { observedGeneration: 2, replicas: want, updatedReplicas: want, availableReplicas: available, readyReplicas: available },
  });

  /** A runner where synth/deploy write what cdktf writes, and the cluster comes up after a few polls. */
  function deployingRunner(): FakeRunner {
    return healthyRunner()
      .on('cdktf synth', () => {
        fs.mkdirSync(path.join(dir, 'cdktf.out'), { recursive: true });
        fs.writeFileSync(path.join(dir, 'cdktf.out', 'manifest.json'), JSON.stringify({ stacks: { 'ws-envoy-admission': {} } }));
        return ok('');
      })
      .on('cdktf deploy', (args) => {
        const file = args[args.indexOf('--outputs-file') + 1];
        fs.writeFileSync(
          file,
          JSON.stringify({ 'ws-envoy-admission': { namespace: 'ws-admission', metricsCommand: 'npm run metrics -- --port-forward' } }),
        );
        return ok('Apply complete! Resources: 14 added, 0 changed, 0 destroyed.');
      })
      .on(
        'kubectl get deployments -n ws-admission',
        ok({ items: [deployment('ws-envoy', 2, 1), deployment('ws-redis', 1, 0)] }),
        ok({ items: [deployment('ws-envoy', 2, 2), deployment('ws-redis', 1, 1)] }),
      )
      .on(
        'kubectl get services -n ws-admission',
        ok({ items: [{ metadata: { name: 'ws-envoy-nlb' }, spec: { type: 'LoadBalancer' }, status: {} }] }),
        ok({
          items: [
            {
              metadata: { name: 'ws-envoy-nlb' },
              spec: { type: 'LoadBalancer' },
              status: { loadBalancer: { ingress: [{ hostname: 'k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com' }] } },
            },
          ],
        }),
      );
  }

  function probes(): NetProbes & { calls: string[] } {
    const calls: string[] = [];
    let dnsTries = 0;
    let httpTries = 0;
    let wsTries = 0;
    return {
      calls,
      async lookup(host) {
        calls.push(`dns ${host}`);
        if (++dnsTries < 2) throw new Error(`getaddrinfo ENOTFOUND ${host}`);
        return ['3.120.1.2'];
      },
      async httpGet(url) {
        calls.push(`GET ${url}`);
        return { status: ++httpTries < 2 ? 503 : 200 };
      },
      async wsUpgrade(url) {
        calls.push(`WS ${url}`);
        return { status: ++wsTries < 2 ? 503 : 101 };
      },
    };
  }

  /** One runDeploy on the fakes: its exit code, what it printed, the reporter's lines and the fakes it ran on. */
  async function deploy(
    o: Partial<DeployOptions> = {},
    fakes: { runner?: FakeRunner; probes?: NetProbes & { calls: string[] }; env?: NodeJS.ProcessEnv } = {},
  ) {
    const runner = fakes.runner ?? deployingRunner();
    const net = fakes.probes ?? probes();
    const reporter = new MemoryReporter();
    let out = '';
    const code = await runDeploy(opts(o), {
      runner,
      probes: net,
      reporter,
      clock: new FakeClock(),
      env: fakes.env ?? {},
      projectDir: dir,
      out: { write: (s: string) => (out += s) },
    });
    return { code, out, lines: reporter.lines, runner, net };
  }

  it('deploys, waits for every step with progress, and prints the outputs', async () => {
    const { code, out, lines, runner, net } = await deploy({}, { env: { PATH: '/usr/bin' } });
    expect(out).not.toContain('failed');
    expect(code).toBe(0);
    const deployCall = runner.calls.find((c) => c.args[0] === 'deploy')!;
    expect(deployCall.args.slice(0, 3)).toEqual(['deploy', 'ws-envoy-admission', '--auto-approve']);
    expect(deployCall.env!.CHECKPOINT_DISABLE).toBe('1');
    expect(lines).toEqual(
      expect.arrayContaining([
        'ok stack ws-envoy-admission',
        '… rollouts 0ms ws-envoy: 1/2 replicas available; ws-redis: 0/1 replicas available',
        'ok ws-envoy 2/2',
        'ok hostname k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com',
        'ok resolves to 3.120.1.2',
        'ok GET http://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/ answered 200',
        'ok WebSocket upgrade at ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/ answered 101 (closed again at once)',
      ]),
    );
    expect(net.calls).toEqual([
      'dns k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com',
      'dns k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com',
      'GET http://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
      'GET http://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
    ]);
    expect(out).toMatch(/ {4}namespace {7}ws-admission\n/);
    expect(out).toContain('    metricsCommand  npm run metrics -- --port-forward\n');
  });

  it('stops before touching AWS when a prerequisite is missing, naming the step and each missing part', async () => {
    const runner = healthyRunner()
      .on('terraform version -json', { code: 127, notFound: true, stderr: 'spawn terraform ENOENT' })
      .on(
        'kubectl get deployment -n kube-system aws-load-balancer-controller',
        fail('Error from server (NotFound): deployments.apps "aws-load-balancer-controller" not found'),
      );
    const { code, out, lines } = await deploy({}, { runner });
    expect(code).toBe(1);
    expect(out.trim()).toBe('deploy failed at step "prerequisites": 2 prerequisites missing: terraform, AWS Load Balancer Controller');
    expect(lines).toContain('FAIL terraform: terraform is not installed (not on PATH)');
    expect(runner.commandLines().some((l) => l.startsWith('cdktf'))).toBe(false);
  });

  it('reports a rollout that never becomes ready as a timeout of that step', async () => {
    const runner = deployingRunner().on('kubectl get deployments -n ws-admission', ok({ items: [deployment('ws-envoy', 2, 1)] }));
    const { code, out } = await deploy({ timeoutMs: 10000 }, { runner });
    expect(code).toBe(1);
    expect(out.trim()).toBe(
      'deploy failed at step "rollouts": timed out after 10 s waiting for the Deployments in namespace ws-admission to be rolled out (last seen: ws-envoy: 1/2 replicas available)',
    );
  });

  it('reports an NLB that never gets an address', async () => {
    const runner = deployingRunner().on(
      'kubectl get services -n ws-admission',
      ok({ items: [{ metadata: { name: 'ws-envoy-nlb' }, spec: { type: 'LoadBalancer' }, status: {} }] }),
    );
    const { code, out } = await deploy({ timeoutMs: 5000 }, { runner });
    expect(code).toBe(1);
    expect(out).toContain(
      'deploy failed at step "NLB hostname": timed out after 5 s waiting for the NLB hostname on the LoadBalancer Service in namespace ws-admission (last seen: Service ws-envoy-nlb has no load balancer address yet',
    );
  });

  it('reports a WebSocket upgrade that is refused until the timeout', async () => {
    const net = probes();
    net.wsUpgrade = async () => ({ status: 429, headers: { 'retry-after': '37' } });
    const { code, out } = await deploy({ timeoutMs: 5000 }, { probes: net });
    expect(code).toBe(1);
    expect(out).toContain(
      'deploy failed at step "WebSocket upgrade": timed out after 5 s waiting for a WebSocket upgrade (101) at ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/ (last seen: 429 rate limited (retry-after 37 s))',
    );
  });

  it("waits through a 503 with the filter's reason: a fresh Redis recovering, then no backend registered yet", async () => {
    const net = probes();
    const answers = [
      { status: 503, headers: { 'x-ws-admission': 'recovering', 'retry-after': '3' } },
      { status: 503, headers: { 'x-ws-admission': 'no_backend' } },
      { status: 101 },
    ];
    net.wsUpgrade = async () => answers.shift() ?? { status: 101 };
    const { code, lines } = await deploy({}, { probes: net });
    expect(code).toBe(0);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^… WebSocket upgrade \d+ms HTTP 503 instead of 101 \(x-ws-admission: recovering\)$/),
        expect.stringMatching(/^… WebSocket upgrade \d+ms HTTP 503 instead of 101 \(x-ws-admission: no_backend\)$/),
      ]),
    );
    // Without the header (not our filter's answer): the status alone.
    const bare = probes();
    bare.wsUpgrade = async () => ({ status: 502 });
    expect((await deploy({ timeoutMs: 3000 }, { probes: bare })).out).toContain('(last seen: HTTP 502 instead of 101)');
  });

  it('names the deploy step when cdktf deploy fails', async () => {
    const runner = deployingRunner().on('cdktf deploy', fail('Error: creating Kubernetes Deployment: Unauthorized', 1));
    const { code, out } = await deploy({}, { runner });
    expect(code).toBe(1);
    expect(out.trim()).toBe('deploy failed at step "deploy": cdktf deploy failed (exit 1); terraform\'s error is printed above');
  });

  it("checks the upgrade through TLS at the certificate's name, and the plain port only if it stayed open", async () => {
    const tls = await deploy({ tls: { port: 8443, hostname: 'chat.example.com', keepPlainPort: false } });
    expect(tls.code).toBe(0);
    expect(tls.net.calls.filter((c) => !c.startsWith('dns'))).toEqual([
      'GET https://chat.example.com:8443/',
      'GET https://chat.example.com:8443/',
      'WS wss://chat.example.com:8443/',
      'WS wss://chat.example.com:8443/',
    ]);
    expect(tls.lines).toContain('ok WebSocket upgrade at wss://chat.example.com:8443/ answered 101 (closed again at once)');
    // No name the certificate covers: the TLS check is skipped, with the reason and the fix.
    const none = await deploy({ tls: { port: 443, hostname: '', keepPlainPort: true } });
    expect(none.code).toBe(0);
    expect(none.net.calls.filter((c) => c.startsWith('WS'))).toEqual([
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
    ]);
    expect(none.lines).toContain(
      "skip TLS checks: nlbTlsHostname is not set, and the certificate cannot cover the NLB's own name; set it to the name your DNS points at the NLB",
    );
  });

  it('skips the traffic checks for an internal NLB unless asked', async () => {
    const { code, net, lines } = await deploy({ internalNlb: true });
    expect(code).toBe(0);
    expect(net.calls.filter((c) => !c.startsWith('dns'))).toEqual([]);
    expect(lines).toContain(
      'skip traffic checks: the NLB is internal (nlbScheme), reachable only from inside the VPC; rerun there with --verify-internal',
    );
    const asked = await deploy({ internalNlb: true, verifyInternal: true });
    expect(asked.net.calls.filter((c) => c.startsWith('WS'))).toHaveLength(2);
  });

  it('--check only runs the checks', async () => {
    const { code, runner } = await deploy({ checkOnly: true }, { runner: healthyRunner() });
    expect(code).toBe(0);
    expect(runner.commandLines().some((l) => l.startsWith('cdktf'))).toBe(false);
  });

  it('--skip-verify deploys and prints the outputs without waiting for anything', async () => {
    const { code, net, runner } = await deploy({ skipVerify: true });
    expect(code).toBe(0);
    expect(net.calls).toEqual([]);
    expect(runner.commandLines().some((l) => l.startsWith('kubectl get deployments'))).toBe(false);
  });

  it('destroy runs cdktf destroy and waits until the LoadBalancer Service is gone', async () => {
    const runner = deployingRunner()
      .on('cdktf destroy', ok('Destroy complete! Resources: 14 destroyed.'))
      .on(
        'kubectl get services -n ws-admission',
        ok({ items: [{ metadata: { name: 'ws-envoy-nlb' }, spec: { type: 'LoadBalancer' } }] }),
        ok({ items: [] }),
      );
    const { code, lines } = await deploy({ mode: 'destroy', namespace: 'ws-admission' }, { runner });
    expect(code).toBe(0);
    expect(runner.commandLines()).toContain('cdktf destroy ws-envoy-admission --auto-approve');
    expect(runner.commandLines().some((l) => l.startsWith('aws ecr'))).toBe(false);
    expect(lines).toContain('ok no LoadBalancer Service left');
  });
});

describe('deploy arguments', () => {
  const config = { clusterName: 'ws-eks', region: 'us-east-1', namespace: 'ws-admission', envoyImage: 'ws-envoy-lua:1.36.2-1' };
  it('takes the target from the config, flags win', () => {
    const o = parseDeployArgs(['--cluster', 'prod', '--timeout', '120'], config, 'deploy');
    expect(o.target).toEqual({ clusterName: 'prod', region: 'us-east-1', envoyImage: 'ws-envoy-lua:1.36.2-1' });
    expect(o.timeoutMs).toBe(120000);
    expect(o.namespace).toBe('ws-admission');
    expect(o.internalNlb).toBe(false);
    expect(parseDeployArgs(['--verify-internal'], { ...config, nlbScheme: 'internal' }, 'deploy')).toMatchObject({
      internalNlb: true,
      verifyInternal: true,
    });
    expect(
      parseDeployArgs([], { ...config, nlbTls: true, nlbTlsPort: 443, nlbTlsHostname: 'ws.example.com', nlbKeepPlainPort: false }, 'deploy')
        .tls,
    ).toEqual({ port: 443, hostname: 'ws.example.com', keepPlainPort: false });
    expect(parseDeployArgs([], config, 'deploy').tls).toBeUndefined();
  });
  it('refuses bad values with the flag and the value', () => {
    expect(() => parseDeployArgs(['--timeout=-3'], config, 'deploy')).toThrow('--timeout must be a positive number of seconds, got -3');
    expect(() => parseDeployArgs(['--ws-path', 'ws'], config, 'deploy')).toThrow('--ws-path must start with /, got ws');
  });
});
