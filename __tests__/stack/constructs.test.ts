import * as fs from 'fs';
import * as path from 'path';
import { Testing, TerraformStack } from 'cdktf';
import { BackendService } from '../../constructs/backend-service';
import { EksProviders } from '../../constructs/eks-providers';
import { DRAIN_LUA, DRAIN_TIMEOUT_SECONDS, EnvoyProxy, preStopCommand } from '../../constructs/envoy';
import { LUA_DIR } from '../../envoy/bootstrap';
import { FilterConfig } from '../../constructs/filter-config';
import { Nlb } from '../../constructs/nlb';
import { Redis } from '../../constructs/redis';
import { SampleBackend } from '../../constructs/sample-backend';
import { FIXTURE_LUA_DIRS } from '../support/synth';

const stack = () => new TerraformStack(Testing.app(), 's');
const filterConfig = (s: TerraformStack) =>
  new FilterConfig(s, 'fc', { namespace: 'ns', envoyYaml: 'admin: {}\n', settingsLua: 'return {}\n', luaDirs: FIXTURE_LUA_DIRS });

describe('construct props are validated', () => {
  it('EksProviders: empty cluster name', () => {
    expect(() => new EksProviders(stack(), 'eks', { clusterName: ' ', region: 'us-east-1' })).toThrow(
      'EksProviders: clusterName must not be empty; set clusterName to the name of your EKS cluster',
    );
  });

  it('Redis: unpinned image', () => {
    expect(() => new Redis(stack(), 'r', { namespace: 'ns', image: 'redis', clientSelector: { a: 'b' } })).toThrow(
      'Redis: image must be pinned with a tag or an @sha256 digest (an untagged image means "latest"), got "redis"',
    );
  });

  it('EnvoyProxy: replicas and concurrency must be positive integers', () => {
    const s = stack();
    const config = filterConfig(s);
    expect(() => new EnvoyProxy(s, 'e1', { namespace: 'ns', image: 'envoy:1.36.2', config, replicas: 0 })).toThrow(
      'EnvoyProxy: replicas must be a positive integer, got 0; use 1 or more',
    );
    expect(() => new EnvoyProxy(s, 'e2', { namespace: 'ns', image: 'envoy:1.36.2', config, concurrency: 1.5 })).toThrow(
      'EnvoyProxy: concurrency must be a positive integer, got 1.5; use 1 or more',
    );
  });

  it('EnvoyProxy: the latest tag', () => {
    const s = stack();
    expect(() => new EnvoyProxy(s, 'e', { namespace: 'ns', image: 'envoy:latest', config: filterConfig(s) })).toThrow(
      'EnvoyProxy: image must not use the "latest" tag (it moves; pin a version or a digest), got "envoy:latest"',
    );
  });

  it('BackendService: name, selector and port', () => {
    expect(() => new BackendService(stack(), 'b', { namespace: 'ns', name: 'Backend', selector: { a: 'b' }, port: 80 })).toThrow(
      'BackendService: name must be a DNS-1123 label',
    );
    expect(() => new BackendService(stack(), 'b', { namespace: 'ns', name: 'be', selector: {}, port: 80 })).toThrow(
      'BackendService: selector must hold at least one label, got {}',
    );
    expect(() => new BackendService(stack(), 'b', { namespace: 'ns', name: 'be', selector: { a: 'b' }, port: 0 })).toThrow(
      'BackendService: port must be an integer between 1 and 65535, got 0',
    );
  });

  it('SampleBackend: replicas and image', () => {
    expect(() => new SampleBackend(stack(), 's', { namespace: 'ns', image: 'echo:1', labels: { a: 'b' }, port: 80, replicas: -1 })).toThrow(
      'SampleBackend: replicas must be a positive integer, got -1; use 1 or more',
    );
    expect(() => new SampleBackend(stack(), 's', { namespace: 'ns', image: 'Echo', labels: { a: 'b' }, port: 80 })).toThrow(
      'SampleBackend: image must be an image reference like',
    );
  });

  it("Nlb: TCP idle timeout within the NLB's 60-6000 s", () => {
    for (const bad of [59, 6001, 90.5]) {
      expect(() => new Nlb(stack(), 'n', { namespace: 'ns', selector: { a: 'b' }, tcpIdleTimeoutSeconds: bad })).toThrow(
        `Nlb: tcpIdleTimeoutSeconds must be an integer between 60 and 6000 (the NLB's range), got ${bad}`,
      );
    }
  });

  it('Nlb: deregistration delay', () => {
    expect(() => new Nlb(stack(), 'n', { namespace: 'ns', selector: { a: 'b' }, deregistrationDelaySeconds: 4000 })).toThrow(
      'Nlb: deregistrationDelaySeconds must be an integer between 0 and 3600, got 4000',
    );
  });
});

describe('constructs/index.ts', () => {
  it('re-exports every construct file', () => {
    const dir = path.resolve(__dirname, '..', '..', 'constructs');
    const index = fs.readFileSync(path.join(dir, 'index.ts'), 'utf8');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && f !== 'index.ts');
    for (const f of files) expect(index).toContain(`export * from './${f.replace(/\.ts$/, '')}';`);
  });
});

describe("EnvoyProxy preStop: sleep, then release the proxy's leases (lua/cli/drain.lua)", () => {
  const deploymentOf = (s: TerraformStack) => {
    const json = JSON.parse(Testing.synth(s));
    return Object.values(json.resource.kubernetes_deployment_v1 as Record<string, any>)[0];
  };

  it('sleeps preStopSleepSeconds, then runs drain.lua under a hard timeout, before SIGTERM', () => {
    const s = stack();
    new EnvoyProxy(s, 'e', { namespace: 'ns', image: 'envoy:1.36.2', config: filterConfig(s) });
    const pod = deploymentOf(s).spec.template.spec;
    expect(pod.container[0].lifecycle.pre_stop).toEqual([
      {
        exec: { command: ['sh', '-c', 'sleep 15; exec timeout 20 luajit /etc/envoy/lua/drain.lua --log-file /proc/1/fd/1'] },
      },
    ]);
    // The grace period covers the sleep and the whole drain (the kubelet would cut it short).
    expect(pod.termination_grace_period_seconds).toBeGreaterThanOrEqual(15 + DRAIN_TIMEOUT_SECONDS);
  });

  it('takes another sleep, and refuses one that is not an integer >= 0 (it goes into sh -c)', () => {
    const s = stack();
    new EnvoyProxy(s, 'e', { namespace: 'ns', image: 'envoy:1.36.2', config: filterConfig(s), preStopSleepSeconds: 5 });
    expect(deploymentOf(s).spec.template.spec.container[0].lifecycle.pre_stop[0].exec.command[2]).toBe(
      'sleep 5; exec timeout 20 luajit /etc/envoy/lua/drain.lua --log-file /proc/1/fd/1',
    );
    expect(preStopCommand(0)[2]).toMatch(/^sleep 0; exec timeout /);
    for (const bad of [-1, 1.5, Number.NaN]) {
      const s2 = stack();
      expect(
        () => new EnvoyProxy(s2, 'e', { namespace: 'ns', image: 'envoy:1.36.2', config: filterConfig(s2), preStopSleepSeconds: bad }),
      ).toThrow(`EnvoyProxy: preStopSleepSeconds must be an integer >= 0, got ${bad}; use e.g. 15`);
    }
  });

  it('runs a file the ConfigMap ships (every lua/envoy and lua/redis file, drain.lua and release_proxy.lua included)', () => {
    expect(DRAIN_LUA).toBe(`${LUA_DIR}/drain.lua`);
    const s = stack();
    const fc = new FilterConfig(s, 'fc', { namespace: 'ns', envoyYaml: 'admin: {}\n', settingsLua: 'return {}\n' });
    expect(fc.data['drain.lua']).toBe(fs.readFileSync(path.join(__dirname, '..', '..', 'lua', 'cli', 'drain.lua'), 'utf8'));
    expect(fc.data['release_proxy.lua']).toBeDefined();
    expect(fc.items).toEqual(
      expect.arrayContaining([
        { key: 'drain.lua', path: 'lua/drain.lua' },
        { key: 'release_proxy.lua', path: 'lua/release_proxy.lua' },
        // drain.lua's own dependencies
        { key: 'resp.lua', path: 'lua/resp.lua' },
        { key: 'settings_loader.lua', path: 'lua/settings_loader.lua' },
        { key: 'settings.lua', path: 'lua/settings.lua' },
      ]),
    );
  });
});
