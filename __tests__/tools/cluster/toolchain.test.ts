// The cluster toolchain's pins (tools/cluster/toolchain.json) agree with what the stack
// and the PR workflow use, and the cache is keyed by them.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import {
  cacheKey,
  cacheRoot,
  CURRENT_LINK,
  findInstalled,
  loadToolchain,
  LOCK_FILE,
  sha256,
  TOOLCHAIN_FILE,
} from '../../../tools/cluster/toolchain';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const t = loadToolchain();

describe('toolchain.json', () => {
  it.each(t.providers.map((p) => [p.name, p.bindings] as const))('names the %s version the bindings pin (%s)', (name, bindings) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', '@cdktf', `provider-${name}`, 'package.json'), 'utf8'));
    expect(pkg.cdktf.provider).toStrictEqual({ name: `registry.terraform.io/hashicorp/${name}`, version: bindings });
  });

  it('pins every Go module to an exact version, and every provider to hashes', () => {
    const versions = [t.terraform.opentofu, t.kubernetes, t.etcd, t.kwok]
      .map((m) => m.version)
      .concat(t.providers.map((p) => p.moduleVersion));
    for (const v of versions) expect(v).toMatch(/^v\d+\.\d+\.\d+(-0\.\d{14}-[0-9a-f]{12})?$/);
    for (const p of t.providers) {
      expect(p.sum).toMatch(/^h1:[A-Za-z0-9+/]{43}=$/);
      expect(p.goModSum).toMatch(/^h1:[A-Za-z0-9+/]{43}=$/);
    }
  });

  it('names the terraform version the PR workflow installs', () => {
    const wf = parse(fs.readFileSync(path.join(ROOT, '.github', 'workflows', 'pr.yml'), 'utf8'));
    expect(wf.env.TERRAFORM_VERSION).toBe(t.terraform.version);
  });
});

describe('the cache', () => {
  const text = fs.readFileSync(TOOLCHAIN_FILE, 'utf8');

  it('lives outside the repository, in WS_TOOLCHAIN_CACHE when set', () => {
    expect(cacheRoot({})).toBe('/var/cache/ws-envoy-toolchain');
    expect(cacheRoot({ WS_TOOLCHAIN_CACHE: '/tmp/tc' })).toBe('/tmp/tc');
  });

  it('is keyed by the pins and the Go version', () => {
    const key = cacheKey(text, 'go1.26.8');
    expect(key).toMatch(/^[0-9a-f]{16}$/);
    expect(cacheKey(text, 'go1.26.8')).toBe(key);
    expect(cacheKey(text.replace('"v0.7.0"', '"v0.6.1"'), 'go1.26.8')).not.toBe(key);
    expect(cacheKey(text, 'go1.26.9')).not.toBe(key);
  });

  it('refuses a missing or stale install, saying what to run', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tc-'));
    try {
      expect(() => findInstalled({ WS_TOOLCHAIN_CACHE: dir })).toThrow(
        `no cluster toolchain in ${dir} (${path.join(dir, CURRENT_LINK, LOCK_FILE)} is missing); build it with tools/cluster/install-toolchain`,
      );
      fs.mkdirSync(path.join(dir, 'k1'));
      fs.symlinkSync('k1', path.join(dir, CURRENT_LINK));
      fs.writeFileSync(path.join(dir, 'k1', LOCK_FILE), JSON.stringify({ pinsSha: sha256('older pins') }));
      expect(() => findInstalled({ WS_TOOLCHAIN_CACHE: dir })).toThrow(
        `the cluster toolchain in ${dir} was built from other pins than ${TOOLCHAIN_FILE}; run tools/cluster/install-toolchain again`,
      );
      fs.writeFileSync(path.join(dir, 'k1', LOCK_FILE), JSON.stringify({ pinsSha: sha256(text), key: 'k1' }));
      expect(findInstalled({ WS_TOOLCHAIN_CACHE: dir }).key).toBe('k1');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
