/**
 * `npm run image:push`: builds envoy/Dockerfile for linux/amd64 and linux/arm64 and
 * pushes it to ECR.
 *
 *   npm run image:push                                # the config's envoyImage (must be an ECR reference)
 *   npm run image:push -- --image 1234.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.40.0-2
 *   npm run image:push -- --envoy-base envoyproxy/envoy:v1.40.0@sha256:…   # another (or a not yet recorded) base digest
 *   npm run image:push -- --create-repository         # create the ECR repository if missing
 *   npm run image:push -- --dry-run                   # print the commands only
 *
 * Steps: aws ecr get-login-password | docker login (password on stdin, never in argv),
 * the repository exists (or is created, immutable tags, scan on push), then
 * docker buildx build --platform ... --push.
 *
 * The Envoy base is envoy/release.json's `image`@`digest` (the one supported Envoy
 * version; the default envoyImage tag `ws-envoy-lua:<version>-<imageBuild>` comes from
 * the same file). While its `digest` is null the build is refused, naming how to
 * resolve it, unless --envoy-base gives a pinned base.
 */
import * as path from 'path';
import { parseArgs } from 'util';
import { loadConfig } from '../../config/load';
import { ENVOY_RELEASE, EnvoyRelease, pinnedEnvoyBase } from '../../envoy/release';
import { parseEcrImage } from '../common/prereqs';
import { NodeProcessRunner, ProcessRunner, formatCommand, lastLine } from '../common/process';

export interface ImageOptions {
  readonly image: string;
  readonly platforms: string;
  /** NAME:TAG@sha256:DIGEST; default: envoy/release.json's image and digest. */
  readonly envoyBase?: string;
  readonly createRepository: boolean;
  readonly dryRun: boolean;
}

export class ImageError extends Error {
  constructor(
    readonly step: string,
    message: string,
  ) {
    super(message);
    this.name = 'ImageError';
  }
}

export async function pushImage(o: ImageOptions, runner: ProcessRunner, projectDir: string, log: (s: string) => void): Promise<void> {
  const ecr = parseEcrImage(o.image);
  if (!ecr || !ecr.tag) {
    throw new ImageError(
      'image',
      `image must be an ECR reference with a tag (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG), got ${JSON.stringify(o.image)}; set envoyImage in the config or pass --image`,
    );
  }
  const base = splitPinnedBase(o.envoyBase ?? defaultEnvoyBase());
  const build = [
    'buildx',
    'build',
    '--platform',
    o.platforms,
    '--file',
    path.join('envoy', 'Dockerfile'),
    '--tag',
    o.image,
    '--build-arg',
    `ENVOY_IMAGE=${base.image}`,
    '--build-arg',
    `ENVOY_DIGEST=${base.digest}`,
    '--provenance=false',
    '--push',
    '.',
  ];
  if (o.dryRun) {
    log(`aws ecr get-login-password --region ${ecr.region} | docker login --username AWS --password-stdin ${ecr.registry}`);
    log(formatCommand('aws', ['ecr', 'describe-repositories', '--repository-names', ecr.repository, '--region', ecr.region]));
    log(formatCommand('docker', build));
    return;
  }
  const need = async (cmd: string, args: string[], what: string): Promise<void> => {
    const r = await runner.run(cmd, args, { timeoutMs: 30000 });
    if (r.notFound) throw new ImageError('prerequisites', `${cmd} is not installed (not on PATH): ${what}`);
    if (r.code !== 0) throw new ImageError('prerequisites', `${formatCommand(cmd, args)} failed: ${lastLine(r)} (${what})`);
  };
  await need('docker', ['buildx', 'version'], 'Docker with the buildx plugin builds the multi-arch image');
  await need('aws', ['--version'], 'the AWS CLI logs in to ECR');

  log(`==> Logging in to ${ecr.registry}`);
  const pw = await runner.run('aws', ['ecr', 'get-login-password', '--region', ecr.region], { timeoutMs: 60000 });
  if (pw.code !== 0) throw new ImageError('ecr login', `aws ecr get-login-password failed: ${lastLine(pw)}`);
  const login = await runner.run('docker', ['login', '--username', 'AWS', '--password-stdin', ecr.registry], {
    input: pw.stdout.trim(),
    timeoutMs: 60000,
  });
  if (login.code !== 0) throw new ImageError('ecr login', `docker login to ${ecr.registry} failed: ${lastLine(login)}`);

  const repo = await runner.run(
    'aws',
    ['ecr', 'describe-repositories', '--repository-names', ecr.repository, '--region', ecr.region, '--output', 'json'],
    { timeoutMs: 60000 },
  );
  if (repo.code !== 0) {
    if (!/RepositoryNotFoundException/.test(repo.stderr))
      throw new ImageError('repository', `aws ecr describe-repositories failed: ${lastLine(repo)}`);
    const create = [
      'ecr',
      'create-repository',
      '--repository-name',
      ecr.repository,
      '--region',
      ecr.region,
      '--image-tag-mutability',
      'IMMUTABLE',
      '--image-scanning-configuration',
      'scanOnPush=true',
      '--output',
      'json',
    ];
    if (!o.createRepository) {
      throw new ImageError(
        'repository',
        `the ECR repository ${ecr.repository} does not exist in ${ecr.region}; create it with \`aws ${create.join(' ')}\` or rerun with --create-repository`,
      );
    }
    log(`==> Creating the ECR repository ${ecr.repository}`);
    const c = await runner.run('aws', create, { timeoutMs: 60000 });
    if (c.code !== 0) throw new ImageError('repository', `aws ecr create-repository failed: ${lastLine(c)}`);
  }

  log(`==> ${formatCommand('docker', build)}`);
  const b = await runner.run('docker', build, { cwd: projectDir, inherit: true });
  if (b.code !== 0)
    throw new ImageError(
      'build',
      `docker buildx build failed (exit ${b.code}); the build output is above. A multi-arch build on one machine needs QEMU (docker run --privileged --rm tonistiigi/binfmt --install all) or a builder per platform`,
    );
  log(`==> Pushed ${o.image} (${o.platforms})`);
}

/**
 * The base of envoy/release.json, pinned: `envoyproxy/envoy:v1.40.0@sha256:…`. Refused
 * while the file records no digest (the Dockerfile's ENVOY_DIGEST has no default then).
 */
export function defaultEnvoyBase(r: EnvoyRelease = ENVOY_RELEASE): string {
  const pinned = pinnedEnvoyBase(r);
  if (pinned === undefined) {
    throw new ImageError(
      'image',
      `envoy/release.json records no digest for ${r.image}; resolve it with \`docker buildx imagetools inspect ${r.image}\` ` +
        '(first line: Digest:), set it as "digest" there (and as ENVOY_DIGEST\'s default in envoy/Dockerfile), ' +
        `or pass --envoy-base ${r.image}@sha256:…`,
    );
  }
  return pinned;
}

/**
 * The Dockerfile takes its base as ENVOY_IMAGE (name:tag) and ENVOY_DIGEST (sha256:…),
 * so another base must come with its digest: `envoyproxy/envoy:v1.40.0@sha256:…`.
 */
export function splitPinnedBase(ref: string): { image: string; digest: string } {
  const m = /^([^@\s]+:[^@:/\s]+)@(sha256:[a-f0-9]{64})$/.exec(ref);
  if (!m) {
    throw new ImageError(
      'image',
      `--envoy-base must be NAME:TAG@sha256:DIGEST (the Dockerfile pins its base by digest), got ${JSON.stringify(ref)}; ` +
        'the digest is the first line of `docker buildx imagetools inspect NAME:TAG`',
    );
  }
  return { image: m[1], digest: m[2] };
}

export function parseImageArgs(argv: readonly string[], defaultImage: string | undefined): ImageOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      image: { type: 'string' },
      platforms: { type: 'string', default: 'linux/amd64,linux/arm64' },
      'envoy-base': { type: 'string' },
      'create-repository': { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const image = values.image ?? defaultImage;
  if (!image) throw new Error('no image given: set envoyImage in the config or pass --image');
  if (values['envoy-base'] !== undefined) splitPinnedBase(values['envoy-base']);
  return {
    image,
    platforms: values.platforms,
    envoyBase: values['envoy-base'],
    createRepository: Boolean(values['create-repository']),
    dryRun: Boolean(values['dry-run']),
  };
}

if (require.main === module) {
  (async () => {
    let def: string | undefined;
    try {
      def = loadConfig().envoyImage;
    } catch (err) {
      process.stderr.write(`image:push: ${err instanceof Error ? err.message : String(err)}\n`);
      return 2;
    }
    const o = parseImageArgs(process.argv.slice(2), def);
    await pushImage(o, new NodeProcessRunner(), path.resolve(__dirname, '..', '..'), (s) => process.stdout.write(`${s}\n`));
    return 0;
  })().then(
    (code) => process.exit(code),
    (err) => {
      const step = err instanceof ImageError ? ` at step "${err.step}"` : '';
      process.stderr.write(`image:push failed${step}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
