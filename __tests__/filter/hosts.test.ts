// lua/envoy/hosts.lua: pod ids (checked before one leaves a proxy: the override, the lease
// log, the agent's registrations, the metrics) and admin /clusters as the agent reads it.
import { lua, luaString } from '../support/luajit';

describe('valid_pod: an ip:port Envoy could list', () => {
  it.each([
    ['10.0.0.1:8080', true],
    ['255.255.255.255:65535', true],
    ['[fd00::3]:8080', true],
    ['[2001:db8:0:0:0:0:0:1]:443', true],
    ['10.0.0.1', false],
    ['10.0.0.1:0', false],
    ['10.0.0.1:65536', false],
    ['10.0.0.1:080', false],
    ['010.0.0.1:80', false],
    ['999.1.1.1:80', false],
    ['[fd00::3::4]:80', false],
    ['[1:2:3:4:5:6:7]:80', false],
    ['fd00::3:80', false],
    ['evil}:{ws}:stats', false],
    ['10.0.0.1:80\n', false],
  ])('valid_pod(%j) = %j', (pod, want) => {
    expect(lua(`out({ require("hosts").valid_pod(${luaString(pod)}) })`)).toEqual([want]);
  });
});

describe('parse_clusters: the healthy hosts of one cluster in admin /clusters', () => {
  it('GIVEN hosts healthy, failing, malformed and of other clusters THEN the healthy valid ones in order, the rejected counted', () => {
    const body = [
      'envoy_admin::127.0.0.1:9000::health_flags::healthy',
      'backend::observability_name::backend',
      'backend::10.0.0.2:8080::cx_active::0',
      'backend::10.0.0.2:8080::health_flags::healthy',
      'backend::10.0.0.1:8080::health_flags::healthy',
      'backend::10.0.0.3:8080::health_flags::/failed_active_hc',
      'backend::10.0.0.4:8080::health_flags::healthy/failed_outlier_check',
      'backend::999.1.1.1:80::health_flags::healthy',
      'backend::10.0.0.2:8080::health_flags::healthy',
      'backend-2::10.0.0.9:8080::health_flags::healthy',
      '',
    ].join('\n');
    expect(lua(`out({ require("hosts").parse_clusters(${luaString(body)}, "backend") })`)).toEqual([['10.0.0.2:8080', '10.0.0.1:8080'], 1]);
  });
});
