/**
 * Builds the local cluster toolchain from source, once, into
 * `${WS_TOOLCHAIN_CACHE:-/var/cache/ws-envoy-toolchain}/<key>` (key: the pins of
 * toolchain.json and the Go version), and reuses it while they match:
 *
 *   tools/cluster/install-toolchain            # prints the lock file of the installed toolchain
 *   WS_TOOLCHAIN_CLI=tofu tools/cluster/...    # build OpenTofu even where a pinned terraform exists
 *   tools/cluster/install-toolchain --trim     # then delete the Go caches (~10 GB), keeping the ~0.7 GB of tools
 *
 * Each Go program is built from a small wrapper module (go.mod written here), because
 * the upstream modules' own `replace` lines do not apply to `go install`. Every build runs
 * under `nice -n 19`: the machine is shared with timing-sensitive tests. A failed step
 * throws naming the step, its log and the fix.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { buildImages, ImageError, IMAGES_FILE } from './images';
import {
  cacheKey,
  cacheRoot,
  CURRENT_LINK,
  GoModulePin,
  InstalledToolchain,
  loadToolchain,
  LOCK_FILE,
  ProviderPin,
  sha256,
  terraformPlatform,
  Toolchain,
  TOOLCHAIN_FILE,
} from './toolchain';

/** Upper bound of one build step (kube-apiserver takes ~10 min on 2 cores, cold). */
const STEP_TIMEOUT_MS = 60 * 60_000;

class StepError extends Error {}

interface Ctx {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly seconds: Record<string, number>;
}

function goVersion(): string {
  const r = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new StepError(
      'toolchain: step "go" failed: no working `go` on PATH; fix: install Go 1.26 (the machine image has it in /usr/local/go/bin) and put it on PATH',
    );
  }
  return r.stdout.trim();
}

/** Runs one command of a step, its output in the step's log; throws with the log's tail on failure. */
function run(
  ctx: Ctx,
  step: string,
  cwd: string,
  cmd: string,
  args: readonly string[],
  fix: string,
  extraEnv: NodeJS.ProcessEnv = {},
): void {
  const log = path.join(ctx.dir, 'logs', `${step}.log`);
  fs.mkdirSync(path.dirname(log), { recursive: true });
  fs.appendFileSync(log, `$ ${cmd} ${args.join(' ')}\n`);
  const fd = fs.openSync(log, 'a');
  try {
    const r = spawnSync(cmd, [...args], {
      cwd,
      env: { ...ctx.env, ...extraEnv },
      stdio: ['ignore', fd, fd],
      timeout: STEP_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    if (r.error || r.status !== 0) {
      const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-12).join('\n  ');
      const why = r.error
        ? String(r.error)
        : r.signal
          ? `killed by ${r.signal} (limit ${STEP_TIMEOUT_MS / 60_000} min)`
          : `exit ${r.status}`;
      throw new StepError(
        `toolchain: step "${step}" failed (${cmd} ${args.slice(0, 3).join(' ')} ...: ${why}); log: ${log}\n  ${tail}\nfix: ${fix}`,
      );
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** A wrapper module that requires `pins` and imports `packages` (so `go mod tidy` resolves them). */
function writeWrapper(
  dir: string,
  name: string,
  goDirective: string,
  pins: readonly GoModulePin[],
  packages: readonly string[],
  replaces: readonly string[],
  sums: readonly string[] = [],
): void {
  fs.mkdirSync(dir, { recursive: true });
  const lines = [
    `module ws-envoy-toolchain/${name}`,
    '',
    `go ${goDirective}`,
    '',
    ...pins.map((p) => `require ${p.module} ${p.version}`),
    '',
    ...replaces.map((r) => `replace ${r}`),
    '',
  ];
  fs.writeFileSync(path.join(dir, 'go.mod'), lines.join('\n'));
  fs.writeFileSync(
    path.join(dir, 'tools.go'),
    `//go:build tools\n\npackage tools\n\nimport (\n${packages.map((p) => `\t_ "${p}"`).join('\n')}\n)\n`,
  );
  fs.writeFileSync(path.join(dir, 'go.sum'), sums.map((s) => `${s}\n`).join(''));
}

/** Builds `packages` of the wrapper in `src` into `outDir/<name>`; skipped when every output exists. */
function goBuild(
  ctx: Ctx,
  step: string,
  src: string,
  builds: ReadonlyArray<{ pkg: string; out: string; ldflags?: string; tags?: string }>,
  pinsSaid: string,
  extraEnv: NodeJS.ProcessEnv = {},
): void {
  if (builds.every((b) => fs.existsSync(b.out))) {
    ctx.seconds[step] = 0;
    return;
  }
  const started = Date.now();
  run(
    ctx,
    step,
    src,
    'go',
    ['mod', 'tidy'],
    `the Go module proxy must serve ${pinsSaid} and everything it requires: check the log for the module it refused, and pin a served version in tools/cluster/toolchain.json`,
    extraEnv,
  );
  for (const b of builds) {
    if (fs.existsSync(b.out)) continue;
    const tmp = `${b.out}.partial`;
    run(
      ctx,
      step,
      src,
      'nice',
      [
        '-n',
        '19',
        'go',
        'build',
        '-trimpath',
        ...(b.tags ? ['-tags', b.tags] : []),
        `-ldflags=-s -w ${b.ldflags ?? ''}`.trim(),
        '-o',
        tmp,
        b.pkg,
      ],
      `compiling ${b.pkg} (${pinsSaid}) failed: a compile error names the package; a newer "go" directive than this Go needs another pin in tools/cluster/toolchain.json; "no space left" needs free disk (about 6 GB) under ${cacheRoot()}`,
      extraEnv,
    );
    fs.renameSync(tmp, b.out);
  }
  ctx.seconds[step] = Math.round((Date.now() - started) / 1000);
}

/** The pinned terraform on PATH, or undefined. */
function pinnedTerraform(version: string): { path: string; version: string } | undefined {
  const r = spawnSync('terraform', ['version', '-json'], {
    encoding: 'utf8',
    env: { ...process.env, CHECKPOINT_DISABLE: '1', TF_CLI_CONFIG_FILE: '/dev/null' },
    timeout: 30_000,
  });
  if (r.error || r.status !== 0) return undefined;
  const found = (JSON.parse(r.stdout) as { terraform_version: string }).terraform_version;
  if (found !== version) return undefined;
  const which = spawnSync('sh', ['-c', 'command -v terraform'], { encoding: 'utf8' });
  return { path: which.stdout.trim(), version: found };
}

function cli(ctx: Ctx, t: Toolchain): InstalledToolchain['cli'] {
  const existing = process.env.WS_TOOLCHAIN_CLI === 'tofu' ? undefined : pinnedTerraform(t.terraform.version);
  if (existing) {
    ctx.seconds.cli = 0;
    return { kind: 'terraform', ...existing };
  }
  const o = t.terraform.opentofu;
  const src = path.join(ctx.dir, 'src', 'opentofu');
  const out = path.join(ctx.dir, 'bin', 'tofu');
  if (!fs.existsSync(out)) {
    const replaces = Object.entries(o.replace).map(([from, to]) => `${from} => ${to}`);
    writeWrapper(src, 'opentofu', '1.24.13', [o], [o.package], replaces);
  }
  goBuild(ctx, 'opentofu', src, [{ pkg: o.package, out }], `${o.module}@${o.version}`);
  return { kind: 'tofu', path: out, version: o.version.replace(/^v/, '') };
}

/** Each provider into the filesystem mirror, under both registries' hostnames (terraform's and OpenTofu's). */
function providers(ctx: Ctx, pins: readonly ProviderPin[]): string {
  const mirror = path.join(ctx.dir, 'providers');
  const platform = terraformPlatform();
  for (const p of pins) {
    const src = path.join(ctx.dir, 'src', `provider-${p.name}`);
    const out = path.join(ctx.dir, 'bin', `terraform-provider-${p.name}_v${p.version}`);
    if (!fs.existsSync(out)) {
      writeWrapper(
        src,
        `provider-${p.name}`,
        '1.26.0',
        [{ module: p.module, version: p.moduleVersion }],
        [p.module],
        [],
        [`${p.module} ${p.moduleVersion} ${p.sum}`, `${p.module} ${p.moduleVersion}/go.mod ${p.goModSum}`],
      );
    }
    // The module's hashes are pinned in toolchain.json; the checksum database lacks some pseudo-versions.
    goBuild(ctx, `provider-${p.name}`, src, [{ pkg: p.module, out }], `${p.module}@${p.moduleVersion} (${p.name} ${p.version})`, {
      GONOSUMDB: p.module,
    });
    for (const host of ['registry.terraform.io', 'registry.opentofu.org']) {
      const dir = path.join(mirror, host, 'hashicorp', p.name, p.version, platform);
      fs.mkdirSync(dir, { recursive: true });
      const link = path.join(dir, `terraform-provider-${p.name}_v${p.version}`);
      fs.rmSync(link, { force: true });
      fs.linkSync(out, link); // a hard link: the mirror costs no disk of its own
    }
  }
  return mirror;
}

function kubernetes(ctx: Ctx, k: Toolchain['kubernetes']): Record<string, string> {
  const src = path.join(ctx.dir, 'src', 'kubernetes');
  const bin: Record<string, string> = {};
  for (const c of k.commands) bin[c] = path.join(ctx.dir, 'bin', c);
  if (!Object.values(bin).every((b) => fs.existsSync(b))) {
    // Every staging module k8s.io/kubernetes requires at v0.0.0 (replaced by ./staging/src/...
    // upstream) points at its published version: v1.34.4 -> v0.34.4.
    const mod = fetchModFile(ctx, k);
    const staging = [...mod.matchAll(/^\s*(k8s\.io\/[a-z0-9-]+) => \.\/staging\/src\//gm)].map((m) => m[1]);
    if (staging.length === 0)
      throw new StepError(
        `toolchain: step "kubernetes" failed: ${k.module}@${k.version}'s go.mod names no staging module; fix: pin a k8s.io/kubernetes release in tools/cluster/toolchain.json`,
      );
    const published = k.version.replace(/^v1\./, 'v0.');
    writeWrapper(
      src,
      'kubernetes',
      '1.24.0',
      [k],
      k.commands.map((c) => `${k.module}/cmd/${c}`),
      staging.map((s) => `${s} => ${s} ${published}`),
    );
  }
  const [major, minor] = k.version.replace(/^v/, '').split('.');
  const ldflags = [
    `-X k8s.io/component-base/version.gitVersion=${k.version}`,
    `-X k8s.io/component-base/version.gitMajor=${major}`,
    `-X k8s.io/component-base/version.gitMinor=${minor}`,
    '-X k8s.io/component-base/version.gitTreeState=clean',
    `-X k8s.io/client-go/pkg/version.gitVersion=${k.version}`,
  ].join(' ');
  goBuild(
    ctx,
    'kubernetes',
    src,
    k.commands.map((c) => ({ pkg: `${k.module}/cmd/${c}`, out: bin[c], ldflags })),
    `${k.module}@${k.version}`,
  );
  return bin;
}

/** The pinned module's go.mod, through `go mod download` (the proxy, checksum-verified). */
function fetchModFile(ctx: Ctx, pin: GoModulePin): string {
  const tmp = path.join(ctx.dir, 'src', 'modfile');
  fs.mkdirSync(tmp, { recursive: true });
  fs.writeFileSync(path.join(tmp, 'go.mod'), 'module ws-envoy-toolchain/modfile\n\ngo 1.24.0\n');
  const r = spawnSync('go', ['mod', 'download', '-json', `${pin.module}@${pin.version}`], {
    cwd: tmp,
    env: ctx.env,
    encoding: 'utf8',
    timeout: STEP_TIMEOUT_MS,
  });
  const info = r.stdout ? (JSON.parse(r.stdout) as { GoMod?: string; Error?: string }) : {};
  if (r.status !== 0 || !info.GoMod) {
    throw new StepError(
      `toolchain: step "kubernetes" failed: go mod download ${pin.module}@${pin.version}: ${info.Error ?? r.stderr}; fix: pin a version the Go module proxy serves in tools/cluster/toolchain.json`,
    );
  }
  return fs.readFileSync(info.GoMod, 'utf8');
}

function cliConfig(ctx: Ctx, mirror: string): string {
  const file = path.join(ctx.dir, 'terraformrc');
  // Only the mirror: `init` never reaches a registry, and fails at once if a provider is missing.
  fs.writeFileSync(
    file,
    [
      'disable_checkpoint = true',
      'provider_installation {',
      `  filesystem_mirror {\n    path = ${JSON.stringify(mirror)}\n  }`,
      '}',
      '',
    ].join('\n'),
  );
  return file;
}

export interface InstallOptions {
  /** @default TOOLCHAIN_FILE */
  readonly file?: string;
  /** Delete the Go module and build caches afterwards (about 10 GB; a changed pin then rebuilds from scratch). @default false */
  readonly trim?: boolean;
}

export function install(o: InstallOptions = {}): InstalledToolchain {
  const file = o.file ?? TOOLCHAIN_FILE;
  const text = fs.readFileSync(file, 'utf8');
  const t = loadToolchain(file);
  const go = goVersion();
  const root = cacheRoot();
  const key = cacheKey(text, go);
  const dir = path.join(root, key);
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // Shared by every entry: a changed pin rebuilds only what changed.
    GOMODCACHE: path.join(root, 'gomod'),
    GOCACHE: path.join(root, 'gocache'),
    GOTOOLCHAIN: 'local',
    GOFLAGS: '-mod=mod -buildvcs=false',
    CGO_ENABLED: '0',
  };
  const ctx: Ctx = { dir, env, seconds: {} };
  const started = Date.now();

  const chosen = cli(ctx, t);
  const mirror = providers(ctx, t.providers);
  const bin: Record<string, string> = { ...kubernetes(ctx, t.kubernetes) };
  bin.etcd = path.join(dir, 'bin', 'etcd');
  writeWrapperOnce(path.join(dir, 'src', 'etcd'), bin.etcd, 'etcd', '1.26.0', t.etcd, t.etcd.module);
  goBuild(ctx, 'etcd', path.join(dir, 'src', 'etcd'), [{ pkg: t.etcd.module, out: bin.etcd }], `${t.etcd.module}@${t.etcd.version}`);
  bin.kwok = path.join(dir, 'bin', 'kwok');
  writeWrapperOnce(path.join(dir, 'src', 'kwok'), bin.kwok, 'kwok', '1.24.0', t.kwok, t.kwok.package);
  goBuild(ctx, 'kwok', path.join(dir, 'src', 'kwok'), [{ pkg: t.kwok.package, out: bin.kwok }], `${t.kwok.module}@${t.kwok.version}`);
  // The real node's programs beside the control plane (kubelet and kube-proxy come with it).
  for (const [name, pin] of [
    ['coredns', t.coredns],
    ['kube-router', t.kubeRouter],
  ] as const) {
    bin[name] = path.join(dir, 'bin', name);
    writeWrapperOnce(path.join(dir, 'src', name), bin[name], name, '1.24.0', pin, pin.package);
    goBuild(ctx, name, path.join(dir, 'src', name), [{ pkg: pin.package, out: bin[name] }], `${pin.module}@${pin.version}`);
  }
  bin.prometheus = prometheus(ctx, t.prometheus);
  bin.pause = pause(ctx);
  debianPackages(ctx, t.node.debian);

  const installed: InstalledToolchain = {
    key,
    pinsSha: sha256(text),
    cli: chosen,
    bin,
    providerMirror: mirror,
    cliConfig: cliConfig(ctx, mirror),
    providers: t.providers,
    node: t.node,
    buildSeconds: { ...ctx.seconds, total: Math.round((Date.now() - started) / 1000) },
  };
  fs.writeFileSync(path.join(dir, LOCK_FILE), `${JSON.stringify(installed, null, 2)}\n`);
  const link = path.join(root, CURRENT_LINK);
  fs.rmSync(link, { force: true });
  fs.symlinkSync(key, link);
  if (o.trim) {
    // The module cache is read-only on purpose; `go clean` knows how to remove it.
    run(ctx, 'trim', dir, 'go', ['clean', '-modcache'], `remove ${env.GOMODCACHE} by hand (chmod -R u+w first)`);
    fs.rmSync(path.join(root, 'gocache'), { recursive: true, force: true });
  }
  return installed;
}

/** Prometheus with Kubernetes service discovery only (its build tags), through a wrapper repeating its replace. */
function prometheus(ctx: Ctx, p: Toolchain['prometheus']): string {
  const out = path.join(ctx.dir, 'bin', 'prometheus');
  const src = path.join(ctx.dir, 'src', 'prometheus');
  if (!fs.existsSync(out)) {
    const replaces = Object.entries(p.replace).map(([from, to]) => `${from} => ${to}`);
    writeWrapper(src, 'prometheus', '1.26.0', [p], [p.package], replaces);
  }
  const version = `-X github.com/prometheus/common/version.Version=${p.version.replace(/^v0\.(\d)(\d\d)\./, (_m, major: string, minor: string) => `${major}.${Number(minor)}.`)}`;
  goBuild(ctx, 'prometheus', src, [{ pkg: p.package, out, tags: p.tags, ldflags: version }], `${p.module}@${p.version}`);
  return out;
}

/** The pod sandbox stand-in (tools/cluster/images/pause/main.go), a static Go program. */
function pause(ctx: Ctx): string {
  const out = path.join(ctx.dir, 'bin', 'pause');
  const src = path.join(ctx.dir, 'src', 'pause');
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, 'go.mod'), 'module ws-envoy-toolchain/pause\n\ngo 1.24.0\n');
  fs.copyFileSync(path.join(__dirname, 'images', 'pause', 'main.go'), path.join(src, 'main.go'));
  goBuild(ctx, 'pause', src, [{ pkg: '.', out }], 'tools/cluster/images/pause');
  return out;
}

/**
 * The real node's Debian packages at their pinned versions (toolchain.json "node.debian"),
 * installed only where one is missing or at another version. Needs root (apt-get).
 */
function debianPackages(ctx: Ctx, pins: { readonly [name: string]: string }): void {
  const started = Date.now();
  const wrong = Object.entries(pins).filter(([name, version]) => {
    const r = spawnSync('dpkg-query', ['-W', '-f=${Status}|${Version}', name], { encoding: 'utf8' });
    return r.status !== 0 || r.stdout !== `install ok installed|${version}`;
  });
  if (wrong.length > 0) {
    const want = wrong.map(([name, version]) => `${name}=${version}`);
    if (process.getuid?.() !== 0) {
      throw new StepError(
        `toolchain: step "debian" failed: ${want.join(' ')} must be installed and this is not root; fix: run tools/cluster/install-toolchain as root once (apt-get), or install them yourself`,
      );
    }
    const fix = `apt-get must serve these exact versions (tools/cluster/toolchain.json "node.debian"): a version Debian replaced is no longer served; pin the one \`apt-cache policy NAME\` shows`;
    run(ctx, 'debian', ctx.dir, 'apt-get', ['update', '-qq'], fix);
    run(ctx, 'debian', ctx.dir, 'nice', ['-n', '19', 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...want], fix, {
      DEBIAN_FRONTEND: 'noninteractive',
    });
  }
  ctx.seconds.debian = Math.round((Date.now() - started) / 1000);
}

function writeWrapperOnce(src: string, out: string, name: string, goDirective: string, pin: GoModulePin, pkg: string): void {
  if (!fs.existsSync(out)) writeWrapper(src, name, goDirective, [pin], [pkg], []);
}

if (require.main === module) {
  try {
    const t = install({ trim: process.argv.includes('--trim') });
    const built = Object.entries(t.buildSeconds)
      .map(([k, v]) => `${k} ${v}s`)
      .join(', ');
    process.stdout.write(`toolchain: ${t.cli.kind} ${t.cli.version} (${t.cli.path}); build times: ${built}\n`);
    process.stdout.write(`toolchain: ${path.join(cacheRoot(), t.key, LOCK_FILE)}\n`);
    // The real node's images need root (debootstrap, buildah); the API suite needs none.
    if (process.getuid?.() === 0) {
      const images = buildImages(t);
      const took = Object.entries(images.buildSeconds)
        .map(([k, v]) => `${k} ${v}s`)
        .join(', ');
      process.stdout.write(
        `images: ${Object.values(images.images)
          .map((i) => i.ref)
          .join(', ')}; build times: ${took}\n`,
      );
      process.stdout.write(`images: ${path.join(images.dir, IMAGES_FILE)}\n`);
    } else {
      process.stdout.write('images: not built (not root); the node suite needs them: run tools/cluster/install-toolchain as root\n');
    }
  } catch (e) {
    process.stderr.write(`${e instanceof StepError || e instanceof ImageError ? e.message : (e as Error).stack}\n`);
    process.exit(1);
  }
}
