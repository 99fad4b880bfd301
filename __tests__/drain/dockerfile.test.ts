// envoy/Dockerfile gives the preStop drain what it needs (read here; the node suite builds
// it for real with buildah: tools/cluster/images.ts).
import * as fs from 'fs';
import * as path from 'path';

const DOCKERFILE = fs.readFileSync(path.join(__dirname, '..', '..', 'envoy', 'Dockerfile'), 'utf8');
const split = DOCKERFILE.lastIndexOf('\nFROM ');
const final = DOCKERFILE.slice(split);

describe('envoy/Dockerfile: a luajit CLI for lua/cli/drain.lua', () => {
  it("installs the distribution's luajit beside luasocket and luasec, nothing compiled", () => {
    expect(final).toMatch(
      /apt-get install -y -qq --no-install-recommends luajit lua-socket lua-sec \\\n \&\& rm -rf \/var\/lib\/apt\/lists\/\*/,
    );
    expect(DOCKERFILE).not.toMatch(/luarocks|build-essential|gcc|-dev\b/);
  });

  it('checks in the final image, with the runtime search paths, that luajit loads the modules and the hook has its commands', () => {
    const env = final.indexOf('ENV LUA_PATH=');
    const check = final.indexOf('luajit -e \'local s = require("socket"); local ssl = require("ssl")');
    expect(env).toBeGreaterThan(0);
    expect(check).toBeGreaterThan(env); // after ENV: the LUA_PATH/LUA_CPATH Envoy's LuaJIT uses
    expect(final.indexOf('ldconfig')).toBeLessThan(check);
    expect(final).toContain('ldd "$(readlink -f "$(command -v luajit)")"');
    expect(final).toContain('for c in sh sleep timeout luajit; do command -v "$c"; done'); // what the preStop command runs
    // Still the pinned base and the non-root user, set after every root step.
    expect(final).toMatch(/^FROM \$\{ENVOY_IMAGE\}@\$\{ENVOY_DIGEST\}$/m);
    expect(final.lastIndexOf('USER 10101:10101')).toBeGreaterThan(check);
  });
});
