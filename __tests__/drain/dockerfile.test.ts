// envoy/Dockerfile gives the preStop drain what it needs (read, not built: no Docker here).
import * as fs from 'fs';
import * as path from 'path';

const DOCKERFILE = fs.readFileSync(path.join(__dirname, '..', '..', 'envoy', 'Dockerfile'), 'utf8');
const split = DOCKERFILE.lastIndexOf('\nFROM ');
const builder = DOCKERFILE.slice(0, split);
const final = DOCKERFILE.slice(split);

describe('envoy/Dockerfile: a luajit CLI for lua/cli/drain.lua', () => {
  it("stages the builder's luajit (the one that loaded socket and ssl there) and a dynamic libluajit if any", () => {
    const stage = builder.indexOf('install -D -m 0755 "$bin" /opt/luajit/bin/luajit');
    expect(stage).toBeGreaterThan(builder.search(/luajit -e 'local s = require\("socket"\); local ssl = require\("ssl"\)/));
    expect(builder).toContain('bin="$(readlink -f "$(command -v luajit)")"');
    expect(builder).toMatch(/ldd "\$bin" \| awk '\$1 ~ \/\^libluajit\/ \{ print \$3 \}'/);
  });

  it('copies it into the final image on PATH, and checks there, with the runtime search paths, that it loads the modules', () => {
    expect(final).toContain('COPY --from=builder /opt/luajit/bin/luajit /usr/local/bin/luajit');
    expect(final).toContain('COPY --from=builder /opt/luajit/lib/ /usr/local/lib/');
    const env = final.indexOf('ENV LUA_PATH=');
    const check = final.indexOf('luajit -e \'local s = require("socket"); local ssl = require("ssl")');
    expect(env).toBeGreaterThan(0);
    expect(check).toBeGreaterThan(env); // after ENV: the LUA_PATH/LUA_CPATH Envoy's LuaJIT uses
    expect(final.indexOf('ldconfig')).toBeLessThan(check);
    expect(final).toContain('ldd /usr/local/bin/luajit');
    expect(final).toContain('for c in sh sleep timeout; do command -v "$c"; done'); // what the preStop command runs
    // Still the pinned base and the non-root user, set after every root step.
    expect(final).toMatch(/^FROM \$\{ENVOY_IMAGE\}@\$\{ENVOY_DIGEST\}$/m);
    expect(final.lastIndexOf('USER 10101:10101')).toBeGreaterThan(check);
    expect(final).not.toMatch(/apt-get/);
  });
});
