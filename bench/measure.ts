/**
 * What the benchmark parts read of the processes they run: CPU seconds and resident
 * memory from /proc, and the rig's Redis pid.
 */
import * as fs from 'fs';
import { LocalRig } from '../tools/lib/local-rig';

/** User + system CPU seconds of a process so far (NaN without a pid). */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  // Fields after the command name: state is field 3, utime 14, stime 15 (clock ticks, 100/s).
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Resident memory of a process (VmRSS), in bytes. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** The pid of the rig's redis-server (for its CPU seconds). */
export async function pidOfRedis(rig: LocalRig): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await rig.redisCli('INFO', 'server'))?.[1]);
}
