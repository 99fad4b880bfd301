/**
 * Formats `terraform show -no-color` output as one pull-request comment: a marker
 * (so CI finds and updates the same comment), the summary line, the changed
 * resources, and the full plan in a collapsible block, cut to fit GitHub's limit.
 */

/** GitHub refuses comment bodies over 65536 characters. */
export const GITHUB_COMMENT_LIMIT = 65536;

export interface PlanSummary {
  readonly add: number;
  readonly change: number;
  readonly destroy: number;
  /** Resources replaced (destroy + create) are counted in add and destroy by terraform too. */
  readonly noChanges: boolean;
  /** "Plan: 1 to add, 2 to change, 0 to destroy." or "No changes." as terraform printed it. */
  readonly line: string;
}

export interface ResourceChange {
  readonly address: string;
  /** created | updated in-place | destroyed | replaced | read | ... as terraform words it */
  readonly action: string;
}

export function summarizePlan(plan: string): PlanSummary | undefined {
  for (const raw of plan.split('\n')) {
    const line = raw.trim();
    const m = /^Plan: (\d+) to add, (\d+) to change, (\d+) to destroy\.?/.exec(line);
    if (m) return { add: Number(m[1]), change: Number(m[2]), destroy: Number(m[3]), noChanges: false, line };
    if (line.startsWith('No changes.')) return { add: 0, change: 0, destroy: 0, noChanges: true, line: 'No changes.' };
  }
  return undefined;
}

/** The "# addr will be created" headers terraform prints before each resource diff. */
export function resourceChanges(plan: string): ResourceChange[] {
  const out: ResourceChange[] = [];
  for (const raw of plan.split('\n')) {
    const m = /^\s*# (\S+) (?:will be|must be) (.+)$/.exec(raw);
    if (m) out.push({ address: m[1], action: m[2].replace(/\s*\(.*\)$/, '').replace(/^be /, '') });
  }
  return out;
}

/**
 * Moves terraform's indented change markers to column 0 so GitHub's `diff`
 * highlighting colours them: "  + foo" -> "+   foo", "  ~ x" -> "!   x".
 */
export function toDiffSyntax(plan: string): string {
  return plan
    .split('\n')
    .map((l) => {
      const m = /^(\s*)([-+~]|-\/\+|\+\/-|<=) (.*)$/.exec(l);
      if (!m) return l;
      const sym = m[2] === '~' ? '!' : m[2].startsWith('-/+') || m[2].startsWith('+/-') ? '!' : m[2] === '<=' ? '#' : m[2];
      return `${sym}${m[1]}${' '.repeat(Math.max(0, m[2].length))}${m[3]}`;
    })
    .join('\n');
}

/**
 * What to do about the failures a plan job typically hits, recognised by terraform's
 * and the providers' own wording. The plan reads live objects in the cluster (the
 * Kubernetes provider refreshes every resource), so cluster access is the usual cause.
 */
const FAILURE_HINTS: ReadonlyArray<{ readonly test: RegExp; readonly hint: string }> = [
  {
    test: /not authorized to perform: eks:DescribeCluster|eks:DescribeCluster.*AccessDenied|AccessDenied.*eks:DescribeCluster/i,
    hint: "The plan role may not read the cluster: allow `eks:DescribeCluster` on it in the role's IAM policy.",
  },
  {
    test: /^\s*(Error: )?Unauthorized\b|the server has asked for the client to provide credentials/im,
    hint: 'The cluster does not know the plan role: add an EKS access entry for the role (`aws eks create-access-entry`) and associate a read policy with it.',
  },
  {
    test: /is forbidden: User .* cannot (get|list|watch) resource/i,
    hint: 'The plan role is known to the cluster but may not read everything the stack manages. `AmazonEKSViewPolicy` excludes Secrets (the stack has one); associate `AmazonEKSAdminViewPolicy` instead, or bind a Kubernetes group with read access to Secrets in the namespace.',
  },
  {
    test: /dial tcp [^\n]*(i\/o timeout|connection refused|no route to host)|no such host|Kubernetes cluster unreachable|context deadline exceeded/i,
    hint: "The runner cannot reach the cluster's API endpoint. A private endpoint (or `publicAccessCidrs` that leave GitHub's runners out) needs the plan job on a runner inside the network: set the repository variable `PLAN_RUNNER` to its label.",
  },
  {
    test: /Error acquiring the state lock|Error loading state|Failed to get existing workspaces|error (reading|writing) [^\n]*S3|S3[^\n]*AccessDenied|AccessDenied[^\n]*s3/i,
    hint: 'The state bucket refused the plan role: it needs `s3:ListBucket` on the bucket, `s3:GetObject` on the state key, and `s3:PutObject`/`s3:DeleteObject` on the `.tflock` key (`use_lockfile`).',
  },
];

/** Hints for a failed plan's output, in a fixed order, each at most once. */
export function planFailureHints(output: string): string[] {
  return FAILURE_HINTS.filter((h) => h.test.test(output)).map((h) => h.hint);
}

export interface CommentInput {
  /** `terraform show -no-color` output, or the error output when the plan failed. */
  readonly plan: string;
  readonly stack: string;
  readonly outcome: 'success' | 'failure';
  /** Short commit SHA the plan was made from. */
  readonly commit?: string;
  /** Link to the workflow run (where the artifact is). */
  readonly runUrl?: string;
  readonly artifactName?: string;
  /** @default GITHUB_COMMENT_LIMIT - 1000 (headroom for the marker and GitHub's own accounting) */
  readonly maxLength?: number;
}

/** The hidden marker CI searches for to update its one comment per stack. */
export function commentMarker(stack: string): string {
  return `<!-- ws-admission-plan:${stack} -->`;
}

function fenceFor(text: string): string {
  let fence = '```';
  while (text.includes(fence)) fence += '`';
  return fence;
}

export function formatPlanComment(input: CommentInput): string {
  const max = input.maxLength ?? GITHUB_COMMENT_LIMIT - 1000;
  const summary = input.outcome === 'success' ? summarizePlan(input.plan) : undefined;
  const changes = input.outcome === 'success' ? resourceChanges(input.plan) : [];
  const head: string[] = [commentMarker(input.stack)];
  const where = [input.commit ? `commit \`${input.commit}\`` : '', input.runUrl ? `[workflow run](${input.runUrl})` : '']
    .filter(Boolean)
    .join(' · ');

  if (input.outcome === 'failure') {
    head.push(
      `### ❌ Terraform plan failed · \`${input.stack}\``,
      '',
      where ? `${where}\n` : '',
      'The plan could not be made; the error output is below.',
    );
    const hints = planFailureHints(input.plan);
    if (hints.length) head.push('', ...hints.map((h) => `- ${h}`), '', 'Setup: docs/operations.md, "CI: plans on pull requests".');
  } else {
    const title = summary?.noChanges
      ? 'no changes'
      : summary
        ? `${summary.add} to add, ${summary.change} to change, ${summary.destroy} to destroy`
        : 'summary not found';
    const icon = summary?.destroy ? '⚠️' : '📋';
    head.push(`### ${icon} Terraform plan · \`${input.stack}\` · ${title}`, '');
    if (where) head.push(where, '');
    head.push(`**${summary?.line ?? 'Plan summary line not found in the output.'}**`);
    if (changes.length) {
      const counts = new Map<string, number>();
      for (const c of changes) counts.set(c.action, (counts.get(c.action) ?? 0) + 1);
      head.push('', [...counts].map(([a, n]) => `${n} ${a}`).join(' · '));
      const destructive = changes.filter((c) => /destroy|replace/.test(c.action));
      if (destructive.length) {
        head.push('', '**Destroyed or replaced:**', ...destructive.slice(0, 50).map((c) => `- \`${c.address}\` ${c.action}`));
        if (destructive.length > 50) head.push(`- … and ${destructive.length - 50} more`);
      }
    }
  }

  const body = input.outcome === 'success' ? toDiffSyntax(input.plan.trimEnd()) : input.plan.trimEnd();
  const lang = input.outcome === 'success' ? 'diff' : 'text';
  const fence = fenceFor(body);
  const lineCount = body.split('\n').length;
  const artifactHint = input.artifactName
    ? ` the artifact \`${input.artifactName}\`${input.runUrl ? ` of the [workflow run](${input.runUrl})` : ''}`
    : " the workflow run's artifacts";
  const open = `<details${input.outcome === 'failure' ? ' open' : ''}><summary>${input.outcome === 'success' ? 'Full plan' : 'Error output'} (${lineCount} lines)</summary>\n\n${fence}${lang}\n`;
  const close = `\n${fence}\n\n</details>\n`;
  const headText = head.join('\n') + '\n\n';

  const fixed = headText.length + open.length + close.length;
  if (fixed + body.length <= max) return headText + open + body + close;

  // Too long: keep whole lines from the top, say how much was cut and where the rest is.
  const note = (n: number): string => `\n… ${n} more lines cut to fit GitHub's comment limit; the full plan is in${artifactHint}.`;
  const budget = max - fixed - note(lineCount).length;
  const lines = body.split('\n');
  const kept: string[] = [];
  let used = 0;
  for (const l of lines) {
    if (used + l.length + 1 > budget) break;
    kept.push(l);
    used += l.length + 1;
  }
  return headText + open + kept.join('\n') + note(lines.length - kept.length) + close;
}
