// lua/cli/agent.lua, the agent sidecar, run as the pod runs it, against a real redis-server
// with the ws_admission library and an Envoy admin stand-in: the metrics snapshot, failures,
// settings, liveness. Its modules have their own files here (host_registry, streams,
// fleet, lease_log); through real Envoy: __tests__/e2e/ (release, faults, churn).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { agentLivenessCommand } from '../../constructs/envoy';
import { STATE_DIR, STATE_FILES } from '../../envoy/bootstrap';
import { loadLibrary } from '../redis/support/functions';
import { agentRig, agentSettings, entry, leaseLogPath, P1, podLuaDir, runOnce, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const rig = agentRig();

describe('the metrics snapshot', () => {
  it('is written every metrics_snapshot_ms from one ws_snapshot call; Redis unavailable: redis_up 0 with the reason', async () => {
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address);
    const file = path.join(a.stateDir, STATE_FILES.snapshot);
    try {
      await waitFor(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('gauge proxies_live 1'), 8000, 'a snapshot');
      const text = fs.readFileSync(file, 'utf8');
      expect(text).toMatch(/^ws-admission-snapshot 1\nwritten_ms \d+\nredis_up 1\n/);
      expect(text.trimEnd().endsWith('end')).toBe(true);
      await rig.server.stop();
      await waitFor(() => fs.readFileSync(file, 'utf8').includes('redis_up 0'), 8000, 'redis_up 0');
      expect(fs.readFileSync(file, 'utf8')).toMatch(/error .*(refused|closed|connect)/);
    } finally {
      await a.stop();
      await rig.server.restart();
      await rig.redis.connect().catch(() => undefined);
      await waitFor(async () => (await rig.redis.ping().catch(() => '')) === 'PONG');
      await loadLibrary(rig.redis);
    }
  });
});

describe('failures and settings', () => {
  it('Redis unavailable: keeps the operations (exit 1 with --once) so a later run applies them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(leaseLogPath(dir), entry('end', 'envoy-a|00aa00|1|00001', P1));
    const down = podLuaDir(agentSettings(1, rig.pwFile, { redis_connect_timeout_ms: 50 }));
    const r = await runOnce(down, 'envoy-a', rig.admin.address, dir);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/Redis .* failed/);
  });

  it('refuses bad settings with the reason, and unknown arguments', async () => {
    const bad = podLuaDir({ ...agentSettings(rig.server.port, rig.pwFile), lease_ttl_ms: -1 });
    const r = await runOnce(bad, 'envoy-a', rig.admin.address, fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-')));
    expect(r.code).toBe(1);
    expect(r.out).toContain('FAILED: bad settings: settings.lease_ttl_ms must be a positive integer, got -1');
    const u = spawnSync('luajit', [path.join(rig.luaDir, 'agent.lua'), '--forever'], {
      env: { ...process.env, WS_LUA_DIR: rig.luaDir },
      encoding: 'utf8',
    });
    expect(u.status).toBe(2);
    expect(u.stderr).toContain('usage: luajit agent.lua [--once]');
  });

  it('its liveness command passes on a fresh heartbeat and fails on a stale or missing one; it writes the heartbeat', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const cmd = agentLivenessCommand().map((a) => a.split(STATE_DIR).join(dir));
    const probe = () => spawnSync(cmd[0], cmd.slice(1)).status;
    expect(probe()).toBe(1); // missing
    fs.writeFileSync(path.join(dir, STATE_FILES.agent_alive), `${Math.floor(Date.now() / 1000) - 60}\n`);
    expect(probe()).toBe(1);
    const a = startAgent(rig.luaDir, 'envoy-a', rig.admin.address, { stateDir: dir });
    try {
      await waitFor(() => probe() === 0, 5000, 'a fresh heartbeat');
    } finally {
      await a.stop();
    }
  });
});
