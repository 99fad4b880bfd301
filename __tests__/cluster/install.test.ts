// The installer's failure path: a module the go command cannot get stops the build at that
// step, and the message names the step, its log and the fix. GOPROXY=off: the failure is
// made here, no registry is asked for a version that does not exist.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { install } from '../../tools/cluster/installer';
import { loadToolchain } from '../../tools/cluster/toolchain';

it('a module the go command cannot get fails its step, naming the step, the log and the fix', () => {
  // GIVEN pins with no usable terraform (so OpenTofu is built first) at a version that does not exist
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tc-fail-'));
  const saved = { cache: process.env.WS_TOOLCHAIN_CACHE, proxy: process.env.GOPROXY };
  try {
    const t = loadToolchain();
    const pins = { ...t, terraform: { ...t.terraform, version: '0.0.0', opentofu: { ...t.terraform.opentofu, version: 'v1.10.999' } } };
    const file = path.join(dir, 'toolchain.json');
    fs.writeFileSync(file, JSON.stringify(pins));
    process.env.WS_TOOLCHAIN_CACHE = path.join(dir, 'cache');
    process.env.GOPROXY = 'off';
    // WHEN installed THEN the opentofu step fails with its log and the fix
    expect(() => install({ file })).toThrow(
      /^toolchain: step "opentofu" failed \(go mod tidy[^)]*: exit 1\); log: \S+\/logs\/opentofu\.log\n[\s\S]*github\.com\/opentofu\/opentofu[\s\S]*GOPROXY=off[\s\S]*\nfix: the Go module proxy must serve github\.com\/opentofu\/opentofu@v1\.10\.999 and everything it requires: check the log for the module it refused, and pin a served version in tools\/cluster\/toolchain\.json$/,
    );
    // AND nothing was marked installed
    expect(fs.existsSync(path.join(dir, 'cache', 'current'))).toBe(false);
  } finally {
    for (const [name, value] of [
      ['WS_TOOLCHAIN_CACHE', saved.cache],
      ['GOPROXY', saved.proxy],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
