import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DeployOptions, parseDeployArgs, runDeploy } from '../../tools/deploy';
import { checkPrerequisites, controllerVersion, parseEcrImage } from '../../tools/lib/prereqs';
import { MemoryReporter } from '../../tools/lib/progress';
import { NetProbes } from '../../tools/lib/verify';
import { FakeClock, FakeRunner, fail, ok } from './fakes';

const IMAGE = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-1';
const TARGET = { clusterName: 'ws-eks', region: 'eu-west-1', envoyImage: IMAGE };

/** Every prerequisite present and healthy. */
function healthyRunner(): FakeRunner {
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

describe('prerequisite checks', () => {
  it('passes when everything is there, and says what it found', async () => {
    const results = await checkPrerequisites(healthyRunner(), TARGET, {});
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results.map((r) => r.name)).toEqual([
      'terraform',
      'aws CLI',
      'AWS credentials',
      'cluster name and region',
      'EKS cluster',
      'kubectl',
      'kubectl context',
      'Envoy image',
      'AWS Load Balancer Controller',
    ]);
    expect(results.find((r) => r.name === 'AWS credentials')!.detail).toBe(
      'account 123456789012 as arn:aws:sts::123456789012:assumed-role/dev/me',
    );
  });

  it('names every missing tool on an empty machine, and skips what depends on it', async () => {
    const results = await checkPrerequisites(new FakeRunner(), TARGET, {});
    const byName = Object.fromEntries(results.map((r) => [r.name, r]));
    expect(byName.terraform.detail).toBe('terraform is not installed (not on PATH)');
    expect(byName.terraform.fix).toContain('install Terraform');
    expect(byName['aws CLI'].detail).toBe('the AWS CLI is not installed (not on PATH)');
    expect(byName['AWS credentials']).toMatchObject({ skipped: true, detail: 'not checked: needs aws CLI' });
    expect(byName['EKS cluster']).toMatchObject({ skipped: true, detail: 'not checked: needs AWS credentials' });
    expect(byName.kubectl.detail).toBe('kubectl is not installed (not on PATH)');
    expect(byName['kubectl context']).toMatchObject({ skipped: true });
    expect(byName['Envoy image'].detail).toBe('cannot check the ECR image: the AWS CLI is not installed');
    expect(byName['AWS Load Balancer Controller']).toMatchObject({ skipped: true, detail: 'not checked: needs kubectl context' });
  });

  it('explains missing AWS credentials', async () => {
    const r = healthyRunner().on(
      'aws sts get-caller-identity',
      fail('Unable to locate credentials. You can configure credentials by running "aws configure".', 253),
    );
    const res = await checkPrerequisites(r, TARGET, {});
    const creds = res.find((x) => x.name === 'AWS credentials')!;
    expect(creds.ok).toBe(false);
    expect(creds.detail).toBe(
      'no usable AWS credentials: Unable to locate credentials. You can configure credentials by running "aws configure".',
    );
    expect(creds.fix).toContain('aws sso login');
    expect(res.find((x) => x.name === 'EKS cluster')).toMatchObject({ skipped: true });
  });

  it('does not report missing credentials twice: the ECR image check is skipped then', async () => {
    const r = healthyRunner().on('aws sts get-caller-identity', fail('The SSO session associated with this profile has expired', 255));
    const res = await checkPrerequisites(r, TARGET, {});
    expect(res.find((x) => x.name === 'Envoy image')).toMatchObject({
      ok: false,
      skipped: true,
      detail: 'not checked: needs AWS credentials',
    });
    expect(r.commandLines().some((l) => l.startsWith('aws ecr describe-images'))).toBe(false);
  });

  it('says when the cluster does not exist or is not ACTIVE', async () => {
    const missing = healthyRunner().on(
      'aws eks describe-cluster',
      fail(
        'An error occurred (ResourceNotFoundException) when calling the DescribeCluster operation: No cluster found for name: ws-eks.',
        254,
      ),
    );
    expect((await checkPrerequisites(missing, TARGET, {})).find((x) => x.name === 'EKS cluster')!.detail).toBe(
      'cluster "ws-eks" does not exist in eu-west-1',
    );
    const creating = healthyRunner().on('aws eks describe-cluster', ok({ cluster: { status: 'CREATING' } }));
    expect((await checkPrerequisites(creating, TARGET, {})).find((x) => x.name === 'EKS cluster')!.detail).toBe(
      'cluster "ws-eks" is CREATING, not ACTIVE',
    );
  });

  it('refuses a kubectl context that points at another cluster, and tells how to switch', async () => {
    const r = healthyRunner().on('kubectl config current-context', ok('kind-dev\n'));
    const c = (await checkPrerequisites(r, TARGET, {})).find((x) => x.name === 'kubectl context')!;
    expect(c.detail).toBe('the current context "kind-dev" is not the cluster "ws-eks"');
    expect(c.fix).toContain('aws eks update-kubeconfig --name ws-eks --region eu-west-1');
  });

  it('reports an API server that does not answer', async () => {
    const r = healthyRunner().on('kubectl get --raw /readyz', fail('Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout'));
    const c = (await checkPrerequisites(r, TARGET, {})).find((x) => x.name === 'kubectl context')!;
    expect(c.detail).toContain('does not answer: Unable to connect to the server');
  });

  it('reports an Envoy image missing from ECR, with the push command', async () => {
    const r = healthyRunner().on(
      'aws ecr describe-images',
      fail(
        "An error occurred (ImageNotFoundException) when calling the DescribeImages operation: The image with imageId {imageTag:'1.36.2-1'} does not exist",
        254,
      ),
    );
    const c = (await checkPrerequisites(r, TARGET, {})).find((x) => x.name === 'Envoy image')!;
    expect(c.detail).toMatch(/^image 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com\/ws-envoy-lua:1\.36\.2-1 is not in ECR/);
    expect(c.fix).toContain('npm run image:push');
    const call = r.commandLines().find((l) => l.startsWith('aws ecr'))!;
    expect(call).toBe(
      'aws ecr describe-images --repository-name ws-envoy-lua --image-ids imageTag=1.36.2-1 --region eu-west-1 --output json',
    );
  });

  it('checks a non-ECR image with docker manifest inspect', async () => {
    const r = healthyRunner().on('docker manifest inspect', fail('no such manifest: docker.io/library/ws-envoy-lua:1.36.2-1'));
    const c = (await checkPrerequisites(r, { ...TARGET, envoyImage: 'ws-envoy-lua:1.36.2-1' }, {})).find((x) => x.name === 'Envoy image')!;
    expect(c.detail).toBe('image ws-envoy-lua:1.36.2-1 cannot be found: no such manifest: docker.io/library/ws-envoy-lua:1.36.2-1');
  });

  it('reports a missing or unready AWS Load Balancer Controller', async () => {
    const missing = healthyRunner().on(
      'kubectl get deployment -n kube-system aws-load-balancer-controller',
      fail('Error from server (NotFound): deployments.apps "aws-load-balancer-controller" not found'),
    );
    expect((await checkPrerequisites(missing, TARGET, {})).find((x) => x.name === 'AWS Load Balancer Controller')!.detail).toMatch(
      /^the AWS Load Balancer Controller is not installed/,
    );
    const unready = healthyRunner().on(
      'kubectl get deployment -n kube-system aws-load-balancer-controller',
      ok({ status: { replicas: 2 } }),
    );
    expect((await checkPrerequisites(unready, TARGET, {})).find((x) => x.name === 'AWS Load Balancer Controller')!.detail).toBe(
      'the AWS Load Balancer Controller has no ready replica (0/2)',
    );
  });

  it('refuses a controller too old for the NLB idle-timeout annotation, unless the stack does not set it', async () => {
    const lbc = (image: string) =>
      healthyRunner().on(
        'kubectl get deployment -n kube-system aws-load-balancer-controller',
        ok({ status: { readyReplicas: 2, replicas: 2 }, spec: { template: { spec: { containers: [{ image }] } } } }),
      );
    const check = async (image: string, nlbListenerAttributes: boolean) =>
      (await checkPrerequisites(lbc(image), { ...TARGET, nlbListenerAttributes }, {})).find(
        (x) => x.name === 'AWS Load Balancer Controller',
      )!;
    const old = await check('public.ecr.aws/eks/aws-load-balancer-controller:v2.8.3', true);
    expect(old).toMatchObject({
      ok: false,
      detail:
        'the AWS Load Balancer Controller is v2.8.3; it ignores the NLB listener idle-timeout annotation (listener attributes came in v2.9.0), so the NLB would drop quiet WebSockets after 350 s',
      fix: 'upgrade the controller to v2.9.0 or later with its IAM policy, or set nlbSetIdleTimeout to false (then idleTimeoutSeconds <= 320)',
    });
    expect(await check('public.ecr.aws/eks/aws-load-balancer-controller:v2.8.3', false)).toMatchObject({
      ok: true,
      detail: 'v2.8.3, 2/2 replicas ready',
    });
    expect(await check('602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon/aws-load-balancer-controller:v2.9.0', true)).toMatchObject({
      ok: true,
      detail: 'v2.9.0, 2/2 replicas ready',
    });
    expect(await check('my.registry/lbc@sha256:abc', true)).toMatchObject({
      ok: true,
      detail: '2/2 replicas ready (version not read from image "my.registry/lbc@sha256:abc")',
    });
    // The controller's own container, not whatever a chart put first.
    const sidecar = healthyRunner().on(
      'kubectl get deployment -n kube-system aws-load-balancer-controller',
      ok({
        status: { readyReplicas: 1, replicas: 1 },
        spec: {
          template: {
            spec: {
              containers: [
                { name: 'log-shipper', image: 'fluent/fluent-bit:2.1.8' },
                { name: 'aws-load-balancer-controller', image: 'public.ecr.aws/eks/aws-load-balancer-controller:v2.11.0' },
              ],
            },
          },
        },
      }),
    );
    expect(
      (await checkPrerequisites(sidecar, { ...TARGET, nlbListenerAttributes: true }, {})).find(
        (x) => x.name === 'AWS Load Balancer Controller',
      ),
    ).toMatchObject({ ok: true, detail: 'v2.11.0, 1/1 replicas ready' });
  });

  it('checks the controller for listener attributes exactly when the config sets the NLB idle timeout', () => {
    expect(parseDeployArgs([], { nlbSetIdleTimeout: true }, 'deploy').target.nlbListenerAttributes).toBe(true);
    expect(parseDeployArgs([], { nlbSetIdleTimeout: false }, 'deploy').target.nlbListenerAttributes).toBe(false);
  });

  it('reads the controller version from its image tag', () => {
    expect(controllerVersion('public.ecr.aws/eks/aws-load-balancer-controller:v2.13.1')).toEqual([2, 13, 1]);
    expect(controllerVersion('registry:5000/aws-load-balancer-controller:v2.10.0-eks-1')).toEqual([2, 10, 0]);
    expect(controllerVersion('public.ecr.aws/eks/aws-load-balancer-controller:v2.9.2@sha256:0123')).toEqual([2, 9, 2]);
    expect(controllerVersion('registry:5000/aws-load-balancer-controller:latest')).toBeNull();
    expect(controllerVersion('registry:5000/aws-load-balancer-controller')).toBeNull();
  });

  it('asks for a cluster name and region when the config has none', async () => {
    const c = (await checkPrerequisites(healthyRunner(), { envoyImage: IMAGE }, {})).find((x) => x.name === 'cluster name and region')!;
    expect(c.detail).toBe('no cluster name and no AWS region given');
  });

  it('parses ECR image references', () => {
    expect(parseEcrImage(IMAGE)).toEqual({
      registry: '123456789012.dkr.ecr.eu-west-1.amazonaws.com',
      region: 'eu-west-1',
      repository: 'ws-envoy-lua',
      tag: '1.36.2-1',
      digest: undefined,
    });
    expect(parseEcrImage('envoyproxy/envoy:v1.36.2')).toBeUndefined();
  });
});

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

  it('deploys, waits for every step with progress, and prints the outputs', async () => {
    const runner = deployingRunner();
    const reporter = new MemoryReporter();
    const net = probes();
    let out = '';
    const code = await runDeploy(opts(), {
      runner,
      probes: net,
      reporter,
      clock: new FakeClock(),
      env: { PATH: '/usr/bin' },
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
    expect(out).not.toContain('failed');
    expect(code).toBe(0);
    const deployCall = runner.calls.find((c) => c.args[0] === 'deploy')!;
    expect(deployCall.args.slice(0, 3)).toEqual(['deploy', 'ws-envoy-admission', '--auto-approve']);
    expect(deployCall.env!.CHECKPOINT_DISABLE).toBe('1');
    expect(reporter.lines).toEqual(
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
    const reporter = new MemoryReporter();
    let out = '';
    const code = await runDeploy(opts(), {
      runner,
      probes: probes(),
      reporter,
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
    expect(code).toBe(1);
    expect(out.trim()).toBe('deploy failed at step "prerequisites": 2 prerequisites missing: terraform, AWS Load Balancer Controller');
    expect(reporter.lines).toContain('FAIL terraform: terraform is not installed (not on PATH)');
    expect(runner.commandLines().some((l) => l.startsWith('cdktf'))).toBe(false);
  });

  it('reports a rollout that never becomes ready as a timeout of that step', async () => {
    const runner = deployingRunner().on('kubectl get deployments -n ws-admission', ok({ items: [deployment('ws-envoy', 2, 1)] }));
    let out = '';
    const code = await runDeploy(opts({ timeoutMs: 10000 }), {
      runner,
      probes: probes(),
      reporter: new MemoryReporter(),
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
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
    let out = '';
    const code = await runDeploy(opts({ timeoutMs: 5000 }), {
      runner,
      probes: probes(),
      reporter: new MemoryReporter(),
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
    expect(code).toBe(1);
    expect(out).toContain(
      'deploy failed at step "NLB hostname": timed out after 5 s waiting for the NLB hostname on the LoadBalancer Service in namespace ws-admission (last seen: Service ws-envoy-nlb has no load balancer address yet',
    );
  });

  it('reports a WebSocket upgrade that is refused until the timeout', async () => {
    const net = probes();
    net.wsUpgrade = async () => ({ status: 429, headers: { 'retry-after': '37' } });
    let out = '';
    const code = await runDeploy(opts({ timeoutMs: 5000 }), {
      runner: deployingRunner(),
      probes: net,
      reporter: new MemoryReporter(),
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
    expect(code).toBe(1);
    expect(out).toContain(
      'deploy failed at step "WebSocket upgrade": timed out after 5 s waiting for a WebSocket upgrade (101) at ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/ (last seen: 429 rate limited (retry-after 37 s))',
    );
  });

  it('names the deploy step when cdktf deploy fails', async () => {
    const runner = deployingRunner().on('cdktf deploy', fail('Error: creating Kubernetes Deployment: Unauthorized', 1));
    let out = '';
    const code = await runDeploy(opts(), {
      runner,
      probes: probes(),
      reporter: new MemoryReporter(),
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: {
        write: (s: string) => {
          out += s;
        },
      },
    });
    expect(code).toBe(1);
    expect(out.trim()).toBe('deploy failed at step "deploy": cdktf deploy failed (exit 1); terraform\'s error is printed above');
  });

  it("checks the upgrade through TLS at the certificate's name, and the plain port only if it stayed open", async () => {
    const net = probes();
    const reporter = new MemoryReporter();
    const code = await runDeploy(opts({ tls: { port: 8443, hostname: 'chat.example.com', keepPlainPort: false } }), {
      runner: deployingRunner(),
      probes: net,
      reporter,
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: { write: () => undefined },
    });
    expect(code).toBe(0);
    expect(net.calls.filter((c) => !c.startsWith('dns'))).toEqual([
      'GET https://chat.example.com:8443/',
      'GET https://chat.example.com:8443/',
      'WS wss://chat.example.com:8443/',
      'WS wss://chat.example.com:8443/',
    ]);
    expect(reporter.lines).toContain('ok WebSocket upgrade at wss://chat.example.com:8443/ answered 101 (closed again at once)');
    // No name the certificate covers: the TLS check is skipped, with the reason and the fix.
    const none = probes();
    const r2 = new MemoryReporter();
    expect(
      await runDeploy(opts({ tls: { port: 443, hostname: '', keepPlainPort: true } }), {
        runner: deployingRunner(),
        probes: none,
        reporter: r2,
        clock: new FakeClock(),
        env: {},
        projectDir: dir,
        out: { write: () => undefined },
      }),
    ).toBe(0);
    expect(none.calls.filter((c) => c.startsWith('WS'))).toEqual([
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
      'WS ws://k8s-ws-nlb-1234.elb.eu-west-1.amazonaws.com/',
    ]);
    expect(r2.lines).toContain(
      "skip TLS checks: nlbTlsHostname is not set, and the certificate cannot cover the NLB's own name; set it to the name your DNS points at the NLB",
    );
  });

  it('skips the traffic checks for an internal NLB unless asked', async () => {
    const net = probes();
    const reporter = new MemoryReporter();
    const code = await runDeploy(opts({ internalNlb: true }), {
      runner: deployingRunner(),
      probes: net,
      reporter,
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: { write: () => undefined },
    });
    expect(code).toBe(0);
    expect(net.calls.filter((c) => !c.startsWith('dns'))).toEqual([]);
    expect(reporter.lines).toContain(
      'skip traffic checks: the NLB is internal (nlbScheme), reachable only from inside the VPC; rerun there with --verify-internal',
    );
  });

  it('--check only runs the checks', async () => {
    const runner = healthyRunner();
    const code = await runDeploy(opts({ checkOnly: true }), {
      runner,
      probes: probes(),
      reporter: new MemoryReporter(),
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: { write: () => undefined },
    });
    expect(code).toBe(0);
    expect(runner.commandLines().some((l) => l.startsWith('cdktf'))).toBe(false);
  });

  it('destroy runs cdktf destroy and waits until the LoadBalancer Service is gone', async () => {
    const runner = deployingRunner()
      .on('cdktf destroy', ok('Destroy complete! Resources: 14 destroyed.'))
      .on(
        'kubectl get services -n ws-admission',
        ok({ items: [{ metadata: { name: 'ws-envoy-nlb' }, spec: { type: 'LoadBalancer' } }] }),
        ok({ items: [] }),
      );
    const reporter = new MemoryReporter();
    const code = await runDeploy(opts({ mode: 'destroy', namespace: 'ws-admission' }), {
      runner,
      probes: probes(),
      reporter,
      clock: new FakeClock(),
      env: {},
      projectDir: dir,
      out: { write: () => undefined },
    });
    expect(code).toBe(0);
    expect(runner.commandLines()).toContain('cdktf destroy ws-envoy-admission --auto-approve');
    expect(runner.commandLines().some((l) => l.startsWith('aws ecr'))).toBe(false);
    expect(reporter.lines).toContain('ok no LoadBalancer Service left');
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
