// Every generated bootstrap, judged by the real Envoy: `envoy --mode validate` loads the
// config, builds every listener and cluster and runs the Lua files' load-time code.
// Whatever it rejects is a bug of the generator.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse, stringify } from 'yaml';
import { DEFAULT_LUA_DIRS, ENVOY_YAML_KEY } from '../../constructs/filter-config';
import { LUA_DIR, STATE_DIR } from '../../envoy/bootstrap';
import { DEBIAN_LUA_ENV, envoyBinary } from '../../tools/rig/envoy-bin';
import { DEFAULT_BASE_PORT, localLayout, renderLocalFiles } from '../../tools/rig/rig';
import { EVERYTHING_CHANGED, Json, byName, synth, unescapeTemplate } from '../stack/support/synth';
import { testConfig } from './support';

function validate(dir: string, yaml: string): { status: number | null; out: string } {
  const file = path.join(dir, 'envoy.yaml');
  fs.writeFileSync(file, yaml);
  const r = spawnSync(envoyBinary(), ['--mode', 'validate', '-c', file, '--disable-hot-restart', '--log-level', 'warn'], {
    env: {
      PATH: process.env.PATH,
      ...DEBIAN_LUA_ENV,
      WS_LUA_DIR: path.join(dir, 'lua'),
      WS_STATE_DIR: path.join(dir, 'state'),
      POD_NAME: 'validate-0',
    },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/**
 * The pod's files from the synthesized ConfigMap, laid out in a temporary directory:
 * the pod's /etc/envoy/lua and /var/run/ws-admission become folders of it, and only
 * those two prefixes of envoy.yaml are rewritten to point there.
 */
function podFiles(json: Json): { dir: string; yaml: string } {
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-validate-'));
  fs.mkdirSync(path.join(dir, 'lua'));
  fs.mkdirSync(path.join(dir, 'state'));
  for (const [key, value] of Object.entries(cm.data as { [k: string]: string })) {
    if (key !== ENVOY_YAML_KEY) fs.writeFileSync(path.join(dir, 'lua', key), unescapeTemplate(value));
  }
  const yaml = unescapeTemplate(cm.data[ENVOY_YAML_KEY])
    .split(LUA_DIR)
    .join(path.join(dir, 'lua'))
    .split(STATE_DIR)
    .join(path.join(dir, 'state'));
  return { dir, yaml };
}

const REPO_LUA = DEFAULT_LUA_DIRS;

describe('envoy --mode validate on every generated bootstrap', () => {
  it.each([
    ['the defaults', {}],
    ['every option changed', EVERYTHING_CHANGED],
  ])('the stack with %s', (_name, overrides) => {
    const { dir, yaml } = podFiles(synth(overrides, REPO_LUA).json);
    try {
      // The real filter files are in place: the Lua filter's load-time code ran.
      expect(fs.existsSync(path.join(dir, 'lua', 'filter.lua'))).toBe(true);
      const r = validate(dir, yaml);
      expect(r.out).toContain('OK');
      expect(r.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the local rig (npm run local), 2 proxies and 3 backends', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-validate-'));
    try {
      const files = renderLocalFiles({ config: testConfig({}) }, dir);
      fs.mkdirSync(path.join(dir, 'lua'));
      for (const [name, text] of files.lua) fs.writeFileSync(path.join(dir, 'lua', name), text);
      // Envoy opens the lease log when it loads the config: its folder must exist (the
      // pod's is an emptyDir; the rig creates one per proxy).
      for (let i = 0; i < 2; i++) fs.mkdirSync(localLayout(DEFAULT_BASE_PORT, i, dir).stateDir);
      expect(files.envoyYaml).toHaveLength(2);
      for (const yaml of files.envoyYaml) {
        const r = validate(dir, yaml);
        expect(r.out).toContain('OK');
        expect(r.status).toBe(0);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('can fail: a bootstrap Envoy does not accept is rejected, naming the field', () => {
    const { dir, yaml } = podFiles(synth({}, REPO_LUA).json);
    try {
      const b = parse(yaml);
      b.static_resources.clusters[0].lb_policy = 'NO_SUCH_POLICY';
      const r = validate(dir, stringify(b));
      expect(r.status).not.toBe(0);
      expect(r.out).toMatch(/NO_SUCH_POLICY|lb_policy/);
      // And a Lua file that fails at load time fails validation too.
      fs.writeFileSync(path.join(dir, 'lua', 'filter.lua'), 'error("boom at load")\n');
      const r2 = validate(dir, yaml);
      expect(r2.status).not.toBe(0);
      expect(r2.out).toContain('boom at load');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
