import { NLB_IDLE_MARGIN_SECONDS, NLB_TCP_IDLE_TIMEOUT } from '../../config/schema';
import { ProcessRunner, RunResult, formatCommand, lastLine } from './process';

/** What deploy/destroy need to know about the target; from flags, env, the stack config. */
export interface Target {
  readonly clusterName?: string;
  readonly region?: string;
  /** The custom Envoy image the stack deploys. */
  readonly envoyImage?: string;
  /**
   * The stack sets the NLB listener's idle timeout (config nlbSetIdleTimeout): the
   * controller must know listener attributes (v2.9.0 and later).
   */
  readonly nlbListenerAttributes?: boolean;
}

/** The first AWS Load Balancer Controller release that applies NLB listener attributes. */
export const LBC_LISTENER_ATTRIBUTES_SINCE = [2, 9, 0] as const;

/** `v2.8.2` from an image such as `public.ecr.aws/eks/aws-load-balancer-controller:v2.8.2`; null when the tag is no version. */
export function controllerVersion(image: string): [number, number, number] | null {
  const m = /:v?(\d+)\.(\d+)\.(\d+)(?:[-+@][^:/]*)?$/.exec(image.split('@')[0]);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}
const compareVersions = (a: readonly number[], b: readonly number[]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  /** On success a short fact ("v1.9.8", "account 1234…"); on failure what is wrong. */
  readonly detail: string;
  /** On failure: what to do about it. */
  readonly fix?: string;
  /** Not run because an earlier check it depends on failed. */
  readonly skipped?: boolean;
}

interface Ctx {
  readonly runner: ProcessRunner;
  readonly env: NodeJS.ProcessEnv;
  readonly target: Target;
  readonly results: Map<string, CheckResult>;
}

const TIMEOUT = 30000;

async function run(ctx: Ctx, cmd: string, args: string[]): Promise<RunResult> {
  return ctx.runner.run(cmd, args, { env: ctx.env, timeoutMs: TIMEOUT });
}

function failed(r: RunResult, cmd: string, args: string[]): string {
  if (r.code === 124) return `${formatCommand(cmd, args)} did not answer within ${TIMEOUT / 1000} s`;
  return `${formatCommand(cmd, args)} failed: ${lastLine(r)}`;
}

function regionArgs(t: Target): string[] {
  return t.region ? ['--region', t.region] : [];
}

/** Splits an ECR image reference: 1234.dkr.ecr.eu-west-1.amazonaws.com/repo/name:tag */
export function parseEcrImage(
  image: string,
): { registry: string; region: string; repository: string; tag?: string; digest?: string } | undefined {
  const m = /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([^:@]+)(?::([^@]+))?(?:@(sha256:[a-f0-9]{64}))?$/.exec(image);
  if (!m) return undefined;
  return { registry: `${m[1]}.dkr.ecr.${m[2]}.amazonaws.com`, region: m[2], repository: m[3], tag: m[4], digest: m[5] };
}

interface Check {
  readonly name: string;
  readonly needs?: readonly string[];
  run(ctx: Ctx): Promise<Omit<CheckResult, 'name'>>;
}

const CHECKS: readonly Check[] = [
  {
    name: 'terraform',
    async run(ctx) {
      const r = await run(ctx, 'terraform', ['version', '-json']);
      if (r.notFound)
        return {
          ok: false,
          detail: 'terraform is not installed (not on PATH)',
          fix: 'install Terraform >= 1.6: https://developer.hashicorp.com/terraform/install',
        };
      if (r.code !== 0) return { ok: false, detail: failed(r, 'terraform', ['version', '-json']) };
      let version = r.stdout.trim();
      try {
        version = (JSON.parse(r.stdout) as { terraform_version: string }).terraform_version;
      } catch {
        /* older terraform prints text */
      }
      return { ok: true, detail: `terraform ${version}` };
    },
  },
  {
    name: 'aws CLI',
    async run(ctx) {
      const r = await run(ctx, 'aws', ['--version']);
      if (r.notFound)
        return {
          ok: false,
          detail: 'the AWS CLI is not installed (not on PATH)',
          fix: 'install AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html',
        };
      if (r.code !== 0) return { ok: false, detail: failed(r, 'aws', ['--version']) };
      return { ok: true, detail: (r.stdout || r.stderr).trim().split(' ')[0] };
    },
  },
  {
    name: 'AWS credentials',
    needs: ['aws CLI'],
    async run(ctx) {
      const args = ['sts', 'get-caller-identity', '--output', 'json', ...regionArgs(ctx.target)];
      const r = await run(ctx, 'aws', args);
      if (r.code !== 0) {
        return {
          ok: false,
          detail: `no usable AWS credentials: ${lastLine(r)}`,
          fix: 'log in (e.g. `aws sso login --profile NAME` and export AWS_PROFILE=NAME) or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY',
        };
      }
      const id = JSON.parse(r.stdout) as { Account?: string; Arn?: string };
      return { ok: true, detail: `account ${id.Account} as ${id.Arn}` };
    },
  },
  {
    name: 'cluster name and region',
    async run(ctx) {
      const missing = [!ctx.target.clusterName && 'cluster name', !ctx.target.region && 'AWS region'].filter(Boolean);
      if (missing.length)
        return {
          ok: false,
          detail: `no ${missing.join(' and no ')} given`,
          fix: 'set clusterName and region in the config (WS_ADMISSION_CLUSTER_NAME, WS_ADMISSION_REGION) or pass --cluster/--region',
        };
      return { ok: true, detail: `${ctx.target.clusterName} in ${ctx.target.region}` };
    },
  },
  {
    name: 'EKS cluster',
    needs: ['AWS credentials', 'cluster name and region'],
    async run(ctx) {
      const name = ctx.target.clusterName!;
      const args = ['eks', 'describe-cluster', '--name', name, '--output', 'json', ...regionArgs(ctx.target)];
      const r = await run(ctx, 'aws', args);
      if (r.code !== 0) {
        const notFound = /ResourceNotFoundException|No cluster found/i.test(r.stderr);
        return notFound
          ? {
              ok: false,
              detail: `cluster "${name}" does not exist in ${ctx.target.region}`,
              fix: 'check --cluster/--region (aws eks list-clusters --region REGION)',
            }
          : { ok: false, detail: failed(r, 'aws', args) };
      }
      const status = (JSON.parse(r.stdout) as { cluster?: { status?: string; version?: string } }).cluster;
      if (status?.status !== 'ACTIVE')
        return {
          ok: false,
          detail: `cluster "${name}" is ${status?.status ?? 'in an unknown state'}, not ACTIVE`,
          fix: 'wait until the cluster is ACTIVE',
        };
      return { ok: true, detail: `${name} (${ctx.target.region}) ACTIVE, Kubernetes ${status.version}` };
    },
  },
  {
    name: 'kubectl',
    async run(ctx) {
      const r = await run(ctx, 'kubectl', ['version', '--client', '-o', 'json']);
      if (r.notFound)
        return {
          ok: false,
          detail: 'kubectl is not installed (not on PATH)',
          fix: 'install kubectl: https://kubernetes.io/docs/tasks/tools/',
        };
      if (r.code !== 0) return { ok: false, detail: failed(r, 'kubectl', ['version', '--client', '-o', 'json']) };
      let v = '';
      try {
        v = (JSON.parse(r.stdout) as { clientVersion?: { gitVersion?: string } }).clientVersion?.gitVersion ?? '';
      } catch {
        /* keep going */
      }
      return { ok: true, detail: `kubectl ${v}`.trim() };
    },
  },
  {
    name: 'kubectl context',
    needs: ['kubectl'],
    async run(ctx) {
      const cur = await run(ctx, 'kubectl', ['config', 'current-context']);
      const update = `aws eks update-kubeconfig --name ${ctx.target.clusterName ?? 'CLUSTER'}${ctx.target.region ? ` --region ${ctx.target.region}` : ''}`;
      if (cur.code !== 0) return { ok: false, detail: `no current kubectl context: ${lastLine(cur)}`, fix: `run \`${update}\`` };
      const context = cur.stdout.trim();
      if (ctx.target.clusterName && !context.endsWith(`/${ctx.target.clusterName}`) && !context.includes(ctx.target.clusterName)) {
        return {
          ok: false,
          detail: `the current context "${context}" is not the cluster "${ctx.target.clusterName}"`,
          fix: `run \`${update}\` (or kubectl config use-context)`,
        };
      }
      const args = ['get', '--raw', '/readyz', '--request-timeout=10s'];
      const r = await run(ctx, 'kubectl', args);
      if (r.code !== 0)
        return {
          ok: false,
          detail: `the API server of context "${context}" does not answer: ${lastLine(r)}`,
          fix: `check network access to the cluster endpoint and your credentials (\`${update}\`)`,
        };
      return { ok: true, detail: `${context}, API server ready` };
    },
  },
  {
    name: 'Envoy image',
    async run(ctx) {
      const image = ctx.target.envoyImage;
      if (!image)
        return {
          ok: false,
          detail: 'no Envoy image given',
          fix: 'set envoyImage in the config (WS_ADMISSION_ENVOY_IMAGE) and build it with `npm run image:push`',
        };
      const ecr = parseEcrImage(image);
      if (ecr) {
        // Looking into ECR needs the credentials; don't report their absence a second time.
        const creds = ctx.results.get('AWS credentials');
        if (creds && !creds.ok && !creds.skipped) return { ok: false, skipped: true, detail: 'not checked: needs AWS credentials' };
        const id = ecr.digest ? `imageDigest=${ecr.digest}` : `imageTag=${ecr.tag ?? 'latest'}`;
        const args = [
          'ecr',
          'describe-images',
          '--repository-name',
          ecr.repository,
          '--image-ids',
          id,
          '--region',
          ecr.region,
          '--output',
          'json',
        ];
        const r = await run(ctx, 'aws', args);
        if (r.notFound) return { ok: false, detail: 'cannot check the ECR image: the AWS CLI is not installed', fix: 'install AWS CLI v2' };
        if (r.code !== 0) {
          const missing = /ImageNotFoundException|RepositoryNotFoundException/.test(r.stderr);
          return {
            ok: false,
            detail: missing ? `image ${image} is not in ECR (${lastLine(r)})` : failed(r, 'aws', args),
            fix: 'build and push it: `npm run image:push -- --image ' + image + '`',
          };
        }
        return { ok: true, detail: `${image} found in ECR` };
      }
      const args = ['manifest', 'inspect', image];
      const r = await run(ctx, 'docker', args);
      if (r.notFound)
        return {
          ok: false,
          detail: `cannot check ${image}: it is not an ECR image and docker is not installed`,
          fix: 'install docker, or use an ECR image reference',
        };
      if (r.code !== 0)
        return { ok: false, detail: `image ${image} cannot be found: ${lastLine(r)}`, fix: 'build and push it: `npm run image:push`' };
      return { ok: true, detail: `${image} exists` };
    },
  },
  {
    name: 'AWS Load Balancer Controller',
    needs: ['kubectl context'],
    async run(ctx) {
      const args = ['get', 'deployment', '-n', 'kube-system', 'aws-load-balancer-controller', '-o', 'json', '--request-timeout=10s'];
      const r = await run(ctx, 'kubectl', args);
      const install =
        'install it (Helm chart eks/aws-load-balancer-controller): https://kubernetes-sigs.github.io/aws-load-balancer-controller/';
      if (r.code !== 0) {
        return /NotFound|not found/i.test(r.stderr)
          ? {
              ok: false,
              detail:
                'the AWS Load Balancer Controller is not installed (no deployment kube-system/aws-load-balancer-controller); without it the NLB Service gets no load balancer',
              fix: install,
            }
          : { ok: false, detail: failed(r, 'kubectl', args) };
      }
      const d = JSON.parse(r.stdout) as {
        status?: { readyReplicas?: number; replicas?: number };
        spec?: { template?: { spec?: { containers?: Array<{ name?: string; image?: string }> } } };
      };
      const ready = d.status?.readyReplicas ?? 0;
      if (ready < 1)
        return {
          ok: false,
          detail: `the AWS Load Balancer Controller has no ready replica (${ready}/${d.status?.replicas ?? 0})`,
          fix: 'kubectl -n kube-system describe deployment aws-load-balancer-controller',
        };
      // The controller's own container (a chart or kustomization may add others before it).
      const containers = d.spec?.template?.spec?.containers ?? [];
      const own =
        containers.find((c) => c.name === 'aws-load-balancer-controller') ??
        containers.find((c) => (c.image ?? '').includes('aws-load-balancer-controller')) ??
        containers[0];
      const image = own?.image ?? '';
      const version = controllerVersion(image);
      const replicas = `${ready}/${d.status?.replicas ?? ready} replicas ready`;
      if (ctx.target.nlbListenerAttributes && version && compareVersions(version, LBC_LISTENER_ATTRIBUTES_SINCE) < 0) {
        return {
          ok: false,
          detail: `the AWS Load Balancer Controller is v${version.join('.')}; it ignores the NLB listener idle-timeout annotation (listener attributes came in v${LBC_LISTENER_ATTRIBUTES_SINCE.join('.')}), so the NLB would drop quiet WebSockets after ${NLB_TCP_IDLE_TIMEOUT.default} s`,
          fix: `upgrade the controller to v${LBC_LISTENER_ATTRIBUTES_SINCE.join('.')} or later with its IAM policy, or set nlbSetIdleTimeout to false (then idleTimeoutSeconds <= ${NLB_TCP_IDLE_TIMEOUT.default - NLB_IDLE_MARGIN_SECONDS})`,
        };
      }
      return {
        ok: true,
        detail: version ? `v${version.join('.')}, ${replicas}` : `${replicas} (version not read from image ${JSON.stringify(image)})`,
      };
    },
  },
];

export const PREREQUISITE_NAMES = CHECKS.map((c) => c.name);

/**
 * Runs every check (independent ones all run, so one pass shows everything that is
 * missing); a check whose dependency failed is reported as skipped.
 */
export async function checkPrerequisites(
  runner: ProcessRunner,
  target: Target,
  env: NodeJS.ProcessEnv,
  only?: readonly string[],
): Promise<CheckResult[]> {
  const ctx: Ctx = { runner, env, target, results: new Map() };
  const out: CheckResult[] = [];
  for (const c of CHECKS) {
    if (only && !only.includes(c.name)) continue;
    const blocked = (c.needs ?? []).find((n) => ctx.results.get(n) && !ctx.results.get(n)!.ok);
    const res: CheckResult = blocked
      ? { name: c.name, ok: false, skipped: true, detail: `not checked: needs ${blocked}` }
      : { name: c.name, ...(await c.run(ctx)) };
    ctx.results.set(c.name, res);
    out.push(res);
  }
  return out;
}
