/**
 * Redis releases with known vulnerabilities that matter to this stack, and the check the
 * config runs on `redisImage`. Redis's own security advisories name the affected versions
 * and the first fixed release of each line; a line with no fixed release here is affected
 * throughout. Keep this table current when a Redis advisory comes out (docs/operations.md,
 * "Keeping Redis patched").
 */
export interface Advisory {
  readonly id: string;
  readonly what: string;
  /** Affected from this version (inclusive). */
  readonly since: string;
  /** The first fixed release of each `major.minor` line; a line not listed is affected. */
  readonly fixedIn: readonly string[];
}

export const REDIS_ADVISORIES: readonly Advisory[] = [
  {
    id: 'CVE-2025-49844, CVE-2025-46817, CVE-2025-46818, CVE-2025-46819',
    what: 'Lua scripting: use-after-free and out-of-bounds reads, remote code execution for any client that may run Lua',
    since: '0.0.0',
    fixedIn: ['6.2.20', '7.2.11', '7.4.6', '8.0.4', '8.2.2'],
  },
  {
    id: 'CVE-2026-23479',
    what: 'use-after-free in the unblock client flow, remote code execution by an authenticated client',
    since: '7.2.0',
    fixedIn: ['8.6.3'],
  },
];

/** The repositories of the official Redis image (Docker Hub and its mirrors). */
const OFFICIAL = /^(?:(?:docker\.io\/|registry-1\.docker\.io\/|public\.ecr\.aws\/docker\/)?(?:library\/)?)redis$/;

type Version = readonly [number, number, number];

function parse(v: string): Version | null {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

function compare(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/** The advisories a Redis version is affected by. */
export function advisoriesFor(version: string): Advisory[] {
  const v = parse(version);
  if (!v) return [];
  return REDIS_ADVISORIES.filter((a) => {
    if (compare(v, parse(a.since)!) < 0) return false;
    const fix = a.fixedIn.map((f) => parse(f)!).find((f) => f[0] === v[0] && f[1] === v[1]);
    // A later line than every listed fix is fixed; a line with no fix listed is affected.
    const newest = a.fixedIn.map((f) => parse(f)!).reduce((x, y) => (compare(x, y) > 0 ? x : y));
    if (!fix) return !(v[0] > newest[0] || (v[0] === newest[0] && v[1] > newest[1]));
    return compare(v, fix) < 0;
  });
}

/**
 * null, or why an official Redis image reference (`redis:<x.y.z>...`) is known to be
 * vulnerable. Images under another name (a private patched build) are not judged.
 */
export function redisImageAdvisory(ref: string): string | null {
  const m = /^([^@:]+(?::\d+\/[^@:]+)?)(?::([^@]+))?(?:@.*)?$/.exec(ref);
  if (!m || !OFFICIAL.test(m[1]) || !m[2]) return null;
  const found = advisoriesFor(m[2]);
  if (found.length === 0) return null;
  return `is Redis ${m[2]}, affected by ${found.map((a) => `${a.id} (${a.what})`).join('; ')}`;
}
