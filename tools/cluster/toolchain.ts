/**
 * The local cluster toolchain: its pins (toolchain.json beside this file), where its
 * cache lives, and what an installed one looks like (`toolchain.lock.json` in the cache
 * entry, written last by install-toolchain). The installer and the cluster tests share this.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

export interface GoModulePin {
  readonly module: string;
  readonly version: string;
}

export interface ProviderPin {
  /** Provider type name (`registry.terraform.io/hashicorp/<name>`). */
  readonly name: string;
  /** The version the @cdktf/provider-<name> bindings pin (and the synthesized JSON asks for). */
  readonly bindings: string;
  /** The version built and put in the mirror (differs from `bindings` only where the proxy refuses it). */
  readonly version: string;
  readonly module: string;
  readonly moduleVersion: string;
  /** The module's go.sum hashes (h1:), pinned here: the checksum database lacks some pseudo-versions. */
  readonly sum: string;
  readonly goModSum: string;
}

export interface Toolchain {
  readonly terraform: {
    readonly version: string;
    readonly opentofu: GoModulePin & { readonly package: string; readonly replace: { readonly [from: string]: string } };
  };
  readonly providers: readonly ProviderPin[];
  readonly kubernetes: GoModulePin & { readonly commands: readonly string[] };
  readonly etcd: GoModulePin;
  readonly kwok: GoModulePin & { readonly package: string };
  readonly coredns: GoModulePin & { readonly package: string };
  readonly kubeRouter: GoModulePin & { readonly package: string };
  readonly prometheus: GoModulePin & {
    readonly package: string;
    readonly tags: string;
    readonly replace: { readonly [from: string]: string };
  };
  readonly node: NodePins;
}

/** The real node's pins beside the Go programs: Debian packages and what the images are built from. */
export interface NodePins {
  /** Debian package name -> exact version (apt-get install NAME=VERSION). */
  readonly debian: { readonly [name: string]: string };
  readonly images: {
    readonly debianSuite: string;
    readonly debianMirror: string;
    readonly debianSecurityMirror: string;
    /** Tags of the stand-in images (the versions they stand in for). */
    readonly pause: string;
    readonly redis: string;
    readonly echo: string;
  };
}

/** What an installed toolchain offers (toolchain.lock.json). */
export interface InstalledToolchain {
  readonly key: string;
  /** sha256 of the toolchain.json it was built from. */
  readonly pinsSha: string;
  /** `terraform` (found on PATH at the pinned version) or `tofu` (built). */
  readonly cli: { readonly kind: 'terraform' | 'tofu'; readonly path: string; readonly version: string };
  /** Absolute paths of etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, kubelet, kube-proxy, coredns, kube-router, pause. */
  readonly bin: { readonly [name: string]: string };
  /** The filesystem mirror the CLI config points at. */
  readonly providerMirror: string;
  /** A CLI config (TF_CLI_CONFIG_FILE) that installs providers from the mirror only. */
  readonly cliConfig: string;
  readonly providers: readonly ProviderPin[];
  /** The real node's pins (toolchain.json "node"), for the image build and the cluster. */
  readonly node: NodePins;
  /** Seconds each step took when it was built (0: taken from the cache). */
  readonly buildSeconds: { readonly [step: string]: number };
}

export const TOOLCHAIN_FILE = path.join(__dirname, 'toolchain.json');

/** Bumped when the installer builds differently from the same pins. */
const INSTALLER_FORMAT = '2';

export function loadToolchain(file = TOOLCHAIN_FILE): Toolchain {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Toolchain;
}

/** `${WS_TOOLCHAIN_CACHE:-/var/cache/ws-envoy-toolchain}`: outside the repository, kept between runs. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.WS_TOOLCHAIN_CACHE || '/var/cache/ws-envoy-toolchain');
}

/** The cache entry's name: a hash of the pins, the Go version and the installer's format. */
export function cacheKey(toolchainText: string, goVersion: string): string {
  return sha256(`${INSTALLER_FORMAT}\n${goVersion}\n${toolchainText}`).slice(0, 16);
}

/** `linux_amd64` and the like, as Terraform names platforms. */
export function terraformPlatform(): string {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };
  return `${process.platform}_${arch[process.arch] ?? process.arch}`;
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** `<cache>/current`: a symlink to the entry the last successful install completed. */
export const CURRENT_LINK = 'current';
export const LOCK_FILE = 'toolchain.lock.json';

/** The installed toolchain built from today's toolchain.json, or an error saying how to get one. */
export function findInstalled(env: NodeJS.ProcessEnv = process.env, file = TOOLCHAIN_FILE): InstalledToolchain {
  const root = cacheRoot(env);
  const lock = path.join(root, CURRENT_LINK, LOCK_FILE);
  if (!fs.existsSync(lock)) {
    throw new Error(
      `no cluster toolchain in ${root} (${lock} is missing); build it with tools/cluster/install-toolchain (about 30 min the first time, seconds once cached)`,
    );
  }
  const installed = JSON.parse(fs.readFileSync(lock, 'utf8')) as InstalledToolchain;
  if (installed.pinsSha !== sha256(fs.readFileSync(file, 'utf8'))) {
    throw new Error(`the cluster toolchain in ${root} was built from other pins than ${file}; run tools/cluster/install-toolchain again`);
  }
  return installed;
}
