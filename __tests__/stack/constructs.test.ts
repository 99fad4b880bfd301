import * as fs from 'fs';
import * as path from 'path';
import { Testing, TerraformStack } from 'cdktf';
import { BackendService } from '../../constructs/backend-service';
import { EksProviders } from '../../constructs/eks-providers';
import { EnvoyProxy } from '../../constructs/envoy';
import { FilterConfig } from '../../constructs/filter-config';
import { Nlb } from '../../constructs/nlb';
import { Redis } from '../../constructs/redis';
import { SampleBackend } from '../../constructs/sample-backend';
import { FIXTURE_LUA_DIRS } from './support/synth';

const stack = () => new TerraformStack(Testing.app(), 's');
const filterConfig = (s: TerraformStack) =>
  new FilterConfig(s, 'fc', { namespace: 'ns', envoyYaml: 'admin: {}\n', settingsLua: 'return {}\n', luaDirs: FIXTURE_LUA_DIRS });

describe('construct props are validated', () => {
  it('EksProviders: empty cluster name', () => {
    expect(() => new EksProviders(stack(), 'eks', { clusterName: ' ', region: 'us-east-1' })).toThrow(
      'EksProviders: clusterName must not be empty; set clusterName to the name of your EKS cluster',
    );
  });

  it('Redis: more than one replica', () => {
    expect(() => new Redis(stack(), 'r', { namespace: 'ns', image: 'redis:7.4.2', clientSelector: { a: 'b' }, replicas: 2 })).toThrow(
      'Redis: replicas must be 1, got 2; for a replicated Redis use ElastiCache and set externalRedisHost',
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
