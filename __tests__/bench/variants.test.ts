// The bench's "bare" Envoy is the rig's generated config with only the admission taken out.
import { parse } from 'yaml';
import { withoutAdmission, publicHcm } from '../../bench/variants';
import { loadConfig } from '../../config/load';
import { renderLocalFiles } from '../../tools/rig/rig';

type Json = any;

describe('withoutAdmission', () => {
  const generated = () => parse(renderLocalFiles({ config: loadConfig({ env: {} }), backends: 1 }, '/tmp/rig').envoyYaml[0]);

  it('takes the Lua filter, the lease log and its periodic entries off the public listener and keeps everything else', () => {
    const before = generated();
    const after = generated();
    withoutAdmission(after);
    expect(publicHcm(after).http_filters.map((f: Json) => f.name)).toStrictEqual(['envoy.filters.http.router']);
    expect(publicHcm(after).access_log.map((a: Json) => a.name)).toStrictEqual(['envoy.access_loggers.stdout']);
    expect(publicHcm(before).access_log_options).toBeDefined();
    // The lease log's entries for open streams and the marker of Envoy's own replies serve
    // only the admission.
    expect(publicHcm(after).access_log_options).toBeUndefined();
    expect(publicHcm(after).local_reply_config).toBeUndefined();
    for (const doc of [before, after]) {
      for (const k of ['http_filters', 'access_log', 'access_log_options', 'local_reply_config']) delete publicHcm(doc)[k];
    }
    expect(after).toStrictEqual(before);
  });

  it('refuses a config whose public listener has no Lua filter', () => {
    const b = generated();
    withoutAdmission(b);
    expect(() => withoutAdmission(b)).toThrow('the generated public listener has no envoy.filters.http.lua to take out');
  });
});
