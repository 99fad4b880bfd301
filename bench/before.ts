/**
 * The admission contract before the Functions library, for the parts that measure it
 * beside today's in one run: commit BEFORE_COMMIT's scripts (lua/redis/*.lua, called with
 * EVALSHA and a host view id) and its worker modules (lua/envoy/hosts.lua, keys.lua), read
 * with `git show` (the files are no longer in the tree).
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

export const BEFORE_COMMIT = '16e3563';
const ROOT = path.resolve(__dirname, '..');

/** A file of BEFORE_COMMIT, or undefined without git or that commit (a tarball of the tree). */
export function beforeFile(file: string): string | undefined {
  const r = spawnSync('git', ['show', `${BEFORE_COMMIT}:${file}`], { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  return r.status === 0 ? r.stdout : undefined;
}

/** lua/redis/<name>.lua of BEFORE_COMMIT. */
export function beforeScript(name: 'admit' | 'register_view' | 'release' | 'renew' | 'snapshot'): string | undefined {
  return beforeFile(`lua/redis/${name}.lua`);
}

/** The key schema before (its lua/redis/README.md): views and their hosts instead of reach and slots. */
export function beforeKeys(tag: string) {
  const k = (s: string) => `{${tag}}:${s}`;
  return { rate: k('rate'), stats: k('stats'), leases: k('leases'), load: k('load'), views: k('views'), hosts: k('hosts') };
}
