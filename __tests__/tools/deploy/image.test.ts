import * as fs from 'fs';
import * as path from 'path';
import { ENVOY_RELEASE } from '../../../envoy/release';
import { ImageError, defaultEnvoyBase, parseImageArgs, pushImage, splitPinnedBase } from '../../../tools/deploy/image';
import { FakeRunner, fail, ok } from '../../support/fakes';

const IMAGE = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-1';
const DOCKERFILE = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'envoy', 'Dockerfile'), 'utf8');

function runner(): FakeRunner {
  return new FakeRunner()
    .on('docker buildx version', ok('github.com/docker/buildx v0.17.1'))
    .on('aws --version', ok('aws-cli/2.17.0'))
    .on('aws ecr get-login-password', ok('s3cr3t-token\n'))
    .on('docker login', ok('Login Succeeded'))
    .on('aws ecr describe-repositories', ok({ repositories: [{ repositoryName: 'ws-envoy-lua' }] }))
    .on('docker buildx build', ok(''));
}

describe('npm run image:push', () => {
  // A pinned base given explicitly: envoy/release.json may not record its digest yet.
  const BASE = `${ENVOY_RELEASE.image}@sha256:${'b'.repeat(64)}`;
  const opts = { image: IMAGE, platforms: 'linux/amd64,linux/arm64', envoyBase: BASE, createRepository: false, dryRun: false };

  it('logs in with the password on stdin, then builds both platforms and pushes', async () => {
    const r = runner();
    const calls: Array<{ line: string; input?: string }> = [];
    const orig = r.run.bind(r);
    r.run = async (cmd, args, o) => {
      calls.push({ line: [cmd, ...args].join(' '), input: o?.input });
      return orig(cmd, args, o);
    };
    await pushImage(opts, r, '/repo', () => undefined);
    const login = calls.find((c) => c.line.startsWith('docker login'))!;
    expect(login.line).toBe('docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-1.amazonaws.com');
    expect(login.input).toBe('s3cr3t-token');
    expect(calls.every((c) => !c.line.includes('s3cr3t'))).toBe(true);
    expect(calls[calls.length - 1].line).toBe(
      `docker buildx build --platform linux/amd64,linux/arm64 --file envoy/Dockerfile --tag ${IMAGE} ` +
        `--build-arg ENVOY_IMAGE=${ENVOY_RELEASE.image} --build-arg ENVOY_DIGEST=sha256:${'b'.repeat(64)} --provenance=false --push .`,
    );
  });

  it('refuses an image that is not in ECR', async () => {
    await expect(pushImage({ ...opts, image: 'ws-envoy-lua:1.36.2-1' }, runner(), '/repo', () => undefined)).rejects.toThrow(
      'image must be an ECR reference with a tag (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG), got "ws-envoy-lua:1.36.2-1"',
    );
  });

  it('says how to create a missing repository, and creates it when asked', async () => {
    const missing = () =>
      runner().on(
        'aws ecr describe-repositories',
        fail('An error occurred (RepositoryNotFoundException) when calling the DescribeRepositories operation', 254),
      );
    await expect(pushImage(opts, missing(), '/repo', () => undefined)).rejects.toThrow(
      /the ECR repository ws-envoy-lua does not exist in eu-west-1; create it with `aws ecr create-repository --repository-name ws-envoy-lua/,
    );
    const r = missing().on('aws ecr create-repository', ok({}));
    await pushImage({ ...opts, createRepository: true }, r, '/repo', () => undefined);
    expect(r.commandLines()).toContain(
      'aws ecr create-repository --repository-name ws-envoy-lua --region eu-west-1 --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true --output json',
    );
  });

  it('names a missing docker buildx', async () => {
    const r = runner().on('docker buildx version', { code: 127, notFound: true });
    const err = await pushImage(opts, r, '/repo', () => undefined).catch((e: ImageError) => e);
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).step).toBe('prerequisites');
    expect((err as ImageError).message).toBe(
      'docker is not installed (not on PATH): Docker with the buildx plugin builds the multi-arch image',
    );
  });

  it('passes another Envoy base as image and digest, and refuses one without a digest', async () => {
    const base = 'envoyproxy/envoy:v1.36.3@sha256:' + 'a'.repeat(64);
    expect(splitPinnedBase(base)).toEqual({ image: 'envoyproxy/envoy:v1.36.3', digest: 'sha256:' + 'a'.repeat(64) });
    const r = runner();
    await pushImage({ ...opts, envoyBase: base }, r, '/repo', () => undefined);
    const build = r.commandLines()[r.commandLines().length - 1];
    expect(build).toContain('--build-arg ENVOY_IMAGE=envoyproxy/envoy:v1.36.3 --build-arg ENVOY_DIGEST=sha256:' + 'a'.repeat(64));
    expect(() => parseImageArgs(['--envoy-base', 'envoyproxy/envoy:v1.36.3'], IMAGE)).toThrow(
      '--envoy-base must be NAME:TAG@sha256:DIGEST (the Dockerfile pins its base by digest), got "envoyproxy/envoy:v1.36.3"',
    );
  });

  it("without --envoy-base, builds on envoy/release.json's base, or refuses while its digest is unknown", async () => {
    const { envoyBase: _, ...noBase } = opts;
    if (ENVOY_RELEASE.digest === null) {
      const err = await pushImage(noBase, runner(), '/repo', () => undefined).catch((e: ImageError) => e);
      expect(err).toBeInstanceOf(ImageError);
      expect((err as ImageError).message).toContain(`docker buildx imagetools inspect ${ENVOY_RELEASE.image}`);
    } else {
      const r = runner();
      await pushImage(noBase, r, '/repo', () => undefined);
      expect(r.commandLines()[r.commandLines().length - 1]).toContain(
        `--build-arg ENVOY_IMAGE=${ENVOY_RELEASE.image} --build-arg ENVOY_DIGEST=${ENVOY_RELEASE.digest}`,
      );
    }
    expect(defaultEnvoyBase({ ...ENVOY_RELEASE, digest: 'sha256:' + 'd'.repeat(64) })).toBe(
      `${ENVOY_RELEASE.image}@sha256:${'d'.repeat(64)}`,
    );
  });

  it('takes the config image by default', () => {
    expect(parseImageArgs([], IMAGE).image).toBe(IMAGE);
    expect(parseImageArgs(['--platforms', 'linux/arm64'], IMAGE).platforms).toBe('linux/arm64');
  });
});

describe('envoy/Dockerfile', () => {
  it("pins the Envoy base to the version of envoy/release.json (the default image tag's; __tests__/envoy/release.test.ts)", () => {
    expect(DOCKERFILE).toMatch(new RegExp(`^ARG ENVOY_IMAGE=envoyproxy/envoy:v${ENVOY_RELEASE.version.replace(/\./g, '\\.')}$`, 'm'));
  });
  it('pins both stages to the base by digest (no default while release.json has none), and no unpinned syntax frontend', () => {
    expect(DOCKERFILE).toMatch(/^ARG ENVOY_DIGEST(=sha256:[a-f0-9]{64})?$/m);
    const froms = DOCKERFILE.split('\n').filter((l) => l.startsWith('FROM '));
    expect(froms).toEqual(['FROM ${ENVOY_IMAGE}@${ENVOY_DIGEST} AS builder', 'FROM ${ENVOY_IMAGE}@${ENVOY_DIGEST}']);
    expect(DOCKERFILE).not.toMatch(/^# syntax=/m);
  });
  it('checks in the builder that the envoy binary exports every Lua symbol the modules need, and the final image takes its verdict', () => {
    const builder = DOCKERFILE.slice(0, DOCKERFILE.lastIndexOf('\nFROM '));
    expect(builder).toContain('nm -D --undefined-only');
    expect(builder).toContain('nm -D --defined-only /usr/local/bin/envoy');
    expect(builder).toContain('comm -23 /tmp/needed.syms /tmp/exported.syms');
    expect(DOCKERFILE).toContain('COPY --from=builder /lua-symbols.checked ');
  });
  it("takes luasocket and luasec from the distribution's Lua 5.1 packages, refuses a module with its own Lua runtime, and checks they load", () => {
    expect(DOCKERFILE).toMatch(/--no-install-recommends luajit lua-socket lua-sec/);
    expect(DOCKERFILE).toContain("grep -E 'liblua5\\.[1-4]\\.so|libluajit'");
    expect(DOCKERFILE).toMatch(/luajit -e 'local s = require\("socket"\); local ssl = require\("ssl"\)/);
  });
  it('runs as a fixed non-root user and sets the Lua search paths', () => {
    const final = DOCKERFILE.slice(DOCKERFILE.lastIndexOf('\nFROM '));
    expect(final).toMatch(/^USER 10101:10101$/m);
    expect(final).toContain('LUA_CPATH="/usr/local/lib/lua/5.1/?.so;;"');
    // No compiler, no headers, no binutils in the image itself.
    for (const install of final.match(/apt-get install[^\n]*/g) ?? []) expect(install).not.toMatch(/binutils|build-essential|-dev\b/);
  });
});
