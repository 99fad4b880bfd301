/**
 * Variants of the stack's Envoy config, run beside the local rig in the same run so they
 * can be compared with its own proxies: the rig's generated bootstrap for a proxy index
 * after the rig's own (its ports, admin and state directory in the rig's layout), edited,
 * started with the rig's Lua directory and worker count. Each is stopped by its pid.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { parse, stringify } from 'yaml';
import { EnvoyLayout, LEASE_LOG_FILE, PUBLIC_LISTENER, envoyArgs } from '../envoy/bootstrap';
import { DEBIAN_LUA_ENV, envoyBinary } from '../tools/rig/envoy-bin';
import { LocalRig, localLayout, proxyName, renderLocalFiles } from '../tools/rig/rig';

/** Envoy's bootstrap, as parsed YAML. */
export type Json = any; // (untyped on purpose: a few paths of a large document are edited)

const LUA_FILTER = 'envoy.filters.http.lua';

/** The HTTP connection manager of the public listener. */
export function publicHcm(bootstrap: Json): Json {
  const l = bootstrap.static_resources.listeners.find((x: Json) => x.name === PUBLIC_LISTENER);
  return l.filter_chains[0].filters[0].typed_config;
}

/**
 * The same config without the admission: the public listener loses its Lua filter, the
 * access log that feeds the lease-log sidecar (nothing would read it) and any
 * access_log_options (entries for streams still open serve only the lease log). The
 * request log on stdout, timeouts, buffers and the metrics listener stay as generated.
 */
export function withoutAdmission(bootstrap: Json): void {
  const hcm = publicHcm(bootstrap);
  const filters = hcm.http_filters.filter((f: Json) => f.name !== LUA_FILTER);
  if (filters.length === hcm.http_filters.length) throw new Error(`the generated public listener has no ${LUA_FILTER} to take out`);
  hcm.http_filters = filters;
  hcm.access_log = (hcm.access_log ?? []).filter((a: Json) => !String(a.typed_config?.path ?? '').endsWith(`/${LEASE_LOG_FILE}`));
  delete hcm.access_log_options;
  delete hcm.local_reply_config;
}

export interface RunningVariant {
  readonly pid: number;
  readonly layout: EnvoyLayout;
  readonly logFile: string;
}

export class RigVariants {
  private readonly procs: ChildProcess[] = [];

  /** Configs and logs go to `workDir` (the caller's, removed by the caller). */
  constructor(
    private readonly rig: LocalRig,
    private readonly workDir: string,
  ) {}

  /** Starts Envoy as proxy `index` of the rig's layout, on the rig's generated config for it after `edit`. */
  start(index: number, edit: (bootstrap: Json) => void): RunningVariant {
    if (index < this.rig.proxies.length) throw new Error(`proxy index ${index} is the rig's own; use ${this.rig.proxies.length} or more`);
    const bootstrap = parse(renderLocalFiles({ ...this.rig.options, proxies: index + 1 }, this.rig.workDir).envoyYaml[index]);
    edit(bootstrap);
    const layout = localLayout(this.rig.basePort, index, this.rig.workDir);
    fs.mkdirSync(layout.stateDir, { recursive: true });
    const file = path.join(this.workDir, `${proxyName(index)}.yaml`);
    fs.writeFileSync(file, stringify(bootstrap));
    const logFile = path.join(this.workDir, `${proxyName(index)}.log`);
    const log = fs.openSync(logFile, 'a');
    const env = {
      PATH: process.env.PATH,
      ...DEBIAN_LUA_ENV,
      POD_NAME: proxyName(index),
      WS_LUA_DIR: layout.luaDir,
      WS_STATE_DIR: layout.stateDir, // the metrics listener's filter
    };
    const child = spawn(envoyBinary(), envoyArgs(file, this.rig.options.concurrency ?? 1), { env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    child.on('error', (err) => fs.appendFileSync(logFile, `spawn envoy: ${err.message}\n`));
    this.procs.push(child);
    if (child.pid === undefined) throw new Error(`envoy for proxy index ${index} did not start; see ${logFile}`);
    return { pid: child.pid, layout, logFile };
  }

  /** Stops every Envoy started here: SIGTERM, SIGKILL after 3 s. */
  async stop(): Promise<void> {
    await Promise.all(
      this.procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const gone = new Promise<void>((r) => p.once('exit', () => r()));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await gone;
        clearTimeout(t);
      }),
    );
  }
}
