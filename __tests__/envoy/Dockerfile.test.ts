// envoy/Dockerfile gives the pod's Lua programs outside Envoy -- the preStop drain
// (lua/cli/drain.lua) and the agent sidecar (lua/cli/agent.lua) -- what they need: a luajit
// CLI that loads luasocket and luasec, and the shell commands their container commands run
// (constructs/envoy.ts preStopCommand, agentCommand). Read here; the node suite builds it
// for real with buildah (tools/cluster/images.ts) and runs both in pods.
import * as fs from 'fs';
import * as path from 'path';
import { agentCommand, preStopCommand } from '../../constructs/envoy';

const DOCKERFILE = fs.readFileSync(path.join(__dirname, '..', '..', 'envoy', 'Dockerfile'), 'utf8');
const split = DOCKERFILE.lastIndexOf('\nFROM ');
const final = DOCKERFILE.slice(split);

describe('envoy/Dockerfile: a luajit CLI for lua/cli/drain.lua and lua/cli/agent.lua', () => {
  it("installs the distribution's luajit beside luasocket and luasec, nothing compiled", () => {
    expect(final).toMatch(
      /apt-get install -y -qq --no-install-recommends luajit lua-socket lua-sec \\\n && rm -rf \/var\/lib\/apt\/lists\/\*/,
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
    expect(final).toContain('for c in sh sleep timeout luajit; do command -v "$c"; done');
    // Still the pinned base and the non-root user, set after every root step.
    expect(final).toMatch(/^FROM \$\{ENVOY_IMAGE\}@\$\{ENVOY_DIGEST\}$/m);
    expect(final.lastIndexOf('USER 10101:10101')).toBeGreaterThan(check);
  });

  it('checks every program the preStop hook and the agent container run, besides luajit', () => {
    const checked = /for c in ([a-z ]+); do command -v "\$c"; done/.exec(final)![1].split(' ');
    // The first word of each command of `sh -c <script>` (after exec), and sh itself.
    const programs = (cmd: string[]) => [
      cmd[0],
      ...cmd[cmd.length - 1]
        .split(/;|&&|\|\||&/)
        .map(
          (c) =>
            c
              .trim()
              .replace(/^exec\s+/, '')
              .split(/\s+/)[0],
        )
        .filter(Boolean),
    ];
    const used = new Set(
      [...programs(preStopCommand(15)), ...programs(agentCommand())].filter((p) => !['luajit', 'trap', 'wait', 'exit'].includes(p)), // luajit: checked above; the rest are sh builtins,
    );
    expect([...used].filter((p) => !checked.includes(p))).toEqual([]);
    expect(used.size).toBeGreaterThanOrEqual(3); // sh, sleep, timeout (the scan finds them)
  });
});
