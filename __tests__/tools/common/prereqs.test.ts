// tools/common/prereqs.ts: the prerequisite checks `npm run deploy` runs first (terraform,
// the AWS CLI and credentials, the cluster, kubectl and its context, the Envoy image, the
// AWS Load Balancer Controller), each answered by a fake runner.
import { parseDeployArgs } from '../../../tools/deploy/deploy';
import { checkPrerequisites, controllerVersion, parseEcrImage } from '../../../tools/common/prereqs';
import { FakeRunner, IMAGE, TARGET, fail, healthyRunner, ok } from '../../support/fakes';

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
