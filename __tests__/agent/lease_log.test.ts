// lua/agent/lease_log.lua through the agent: reading the lease log file Envoy writes
// (partial lines, rotation, hostile entries).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { agentRig, entry, leaseLogPath, P1, runOnce, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const rig = agentRig();

describe('the lease log file', () => {
  it("rotates through Envoy's admin /reopen_logs without losing an entry, while entries keep coming", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const file = leaseLogPath(dir);
    // Envoy's side, as its file access log does it: one O_APPEND descriptor, replaced by a
    // fresh open of the path (creating it) shortly after POST /reopen_logs.
    let fd = fs.openSync(file, 'a');
    rig.admin.reopens = 0;
    rig.admin.onReopen = () =>
      setTimeout(() => {
        fs.closeSync(fd);
        fd = fs.openSync(file, 'a');
      }, 30);
    const N = 3000;
    const ids = Array.from({ length: N }, (_, i) => `envoy-r|abcdef|${i}|0a0b0c`);
    for (let i = 0; i < N; i += 1000)
      await rig.f.leases(
        30000,
        0,
        ids.slice(i, i + 1000).map((id) => ['R', id, P1] as const),
      );
    const a = startAgent(rig.luaDir, 'envoy-r', rig.admin.address, { stateDir: dir, env: { WS_LEASE_LOG_ROTATE_BYTES: '16384' } });
    try {
      for (let i = 0; i < N; i += 50) {
        fs.writeSync(
          fd,
          ids
            .slice(i, i + 50)
            .map((id) => entry('end', id, P1))
            .join(''),
        );
        await new Promise((r) => setTimeout(r, 12));
      }
      await waitFor(async () => (await rig.redis.zcard(rig.f.keys.leases)) === 0, 20000, 'every lease released');
      expect(rig.admin.reopens).toBeGreaterThanOrEqual(3);
      expect(fs.existsSync(`${file}.old`)).toBe(false);
    } finally {
      await a.stop();
      rig.admin.onReopen = () => undefined;
      fs.closeSync(fd);
    }
  });

  it('without an admin to ask, keeps the file and truncates it only past 8 MiB', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const file = leaseLogPath(dir);
    fs.writeFileSync(file, 'not a lease line\n'.repeat(70000)); // 1.19 MB: over the rotation size
    expect((await runOnce(rig.luaDir, 'envoy-a', '127.0.0.1:1', dir)).code).toBe(0);
    expect(fs.statSync(file).size).toBe(1190000);
    fs.writeFileSync(file, 'not a lease line\n'.repeat(500000)); // 8.5 MB
    const r = await runOnce(rig.luaDir, 'envoy-a', '127.0.0.1:1', dir);
    expect(r.code).toBe(0);
    expect(fs.statSync(file).size).toBe(0);
    expect(r.out).toContain('truncated');
  });
});
