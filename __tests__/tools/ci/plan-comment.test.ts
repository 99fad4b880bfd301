import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  GITHUB_COMMENT_LIMIT,
  commentMarker,
  formatPlanComment,
  planFailureHints,
  resourceChanges,
  summarizePlan,
  toDiffSyntax,
} from '../../../tools/ci/comment';
import { runPlanComment } from '../../../tools/ci/plan-comment';

const PLAN = fs.readFileSync(path.join(__dirname, 'fixtures', 'plan.txt'), 'utf8');

describe('plan comment', () => {
  it('finds the summary line', () => {
    expect(summarizePlan(PLAN)).toEqual({
      add: 2,
      change: 2,
      destroy: 2,
      noChanges: false,
      line: 'Plan: 2 to add, 2 to change, 2 to destroy.',
    });
    expect(summarizePlan('\nNo changes. Your infrastructure matches the configuration.\n')).toMatchObject({
      noChanges: true,
      line: 'No changes.',
    });
    expect(summarizePlan('garbage')).toBeUndefined();
  });

  it("lists the changed resources with terraform's wording", () => {
    expect(resourceChanges(PLAN)).toEqual([
      { address: 'kubernetes_config_map_v1.envoy_config_9A1B2C3D', action: 'updated in-place' },
      { address: 'kubernetes_deployment_v1.envoy_deployment_5E6F7A8B', action: 'updated in-place' },
      { address: 'kubernetes_config_map_v1.monitoring_dashboard_0C1D2E3F', action: 'created' },
      { address: 'kubernetes_service_v1.redis_service_1A2B3C4D', action: 'replaced' },
      { address: 'kubernetes_pod_disruption_budget_v1.old_pdb', action: 'destroyed' },
    ]);
  });

  it('moves change markers to column 0 for diff highlighting, keeping the width', () => {
    expect(toDiffSyntax('  + resource "a" "b" {\n      ~ x = 1 -> 2\n-/+ resource "c" "d" {\n    id = "x"')).toBe(
      '+   resource "a" "b" {\n!       x = 1 -> 2\n!   resource "c" "d" {\n    id = "x"',
    );
  });

  it('formats one comment with the marker, the summary, destructive changes and the plan folded', () => {
    const text = formatPlanComment({
      plan: PLAN,
      stack: 'ws-envoy-admission',
      outcome: 'success',
      commit: '1a2b3c4d5e6f',
      runUrl: 'https://github.com/o/r/actions/runs/42',
      artifactName: 'plan-ws-envoy-admission',
    });
    expect(text.startsWith(`${commentMarker('ws-envoy-admission')}\n`)).toBe(true);
    expect(text).toContain('**Plan: 2 to add, 2 to change, 2 to destroy.**');
    expect(text).toContain('2 updated in-place · 1 created · 1 replaced · 1 destroyed');
    expect(text).toContain('- `kubernetes_service_v1.redis_service_1A2B3C4D` replaced');
    expect(text).toContain('<details><summary>Full plan (');
    expect(text).toContain('```diff\n');
    expect(text).toMatchSnapshot();
  });

  it('cuts a plan that is too long at a line boundary and points to the artifact', () => {
    const big =
      Array.from(
        { length: 5000 },
        (_, i) => `  + resource "kubernetes_config_map_v1" "cm_${i}" { data = { k = "${'x'.repeat(20)}" } }`,
      ).join('\n') + '\n\nPlan: 5000 to add, 0 to change, 0 to destroy.\n';
    const text = formatPlanComment({ plan: big, stack: 's', outcome: 'success', artifactName: 'plan-s' });
    expect(text.length).toBeLessThanOrEqual(GITHUB_COMMENT_LIMIT - 1000);
    expect(text).toContain('**Plan: 5000 to add, 0 to change, 0 to destroy.**');
    expect(text).toMatch(/… \d+ more lines cut to fit GitHub's comment limit; the full plan is in the artifact `plan-s`\./);
    expect(text.trimEnd().endsWith('</details>')).toBe(true);
    const inFence = text.split('```diff\n')[1].split('\n```')[0];
    for (const line of inFence.split('\n').slice(0, -1))
      expect(line).toMatch(/^\+ {3}resource "kubernetes_config_map_v1" "cm_\d+" \{ data = \{ k = "x{20}" \} \}$|^…/);
  });

  it('shows a failed plan with its error open', () => {
    const text = formatPlanComment({
      plan: 'Error: Unauthorized\n\n  with provider["registry.terraform.io/hashicorp/kubernetes"]',
      stack: 's',
      outcome: 'failure',
    });
    expect(text).toContain('### ❌ Terraform plan failed · `s`');
    expect(text).toContain('<details open><summary>Error output (3 lines)</summary>');
    expect(text).toContain('```text\nError: Unauthorized');
  });

  it('says what to do about the usual plan failures (cluster access, endpoint, state bucket)', () => {
    const unauthorized = 'Planning failed.\n\nError: Unauthorized\n\n  with kubernetes_secret_v1.redis_secret_08F02769,\n';
    expect(planFailureHints(unauthorized)).toEqual([expect.stringContaining('add an EKS access entry for the role')]);
    const forbidden =
      'Error: secrets "ws-redis" is forbidden: User "arn:aws:sts::1:assumed-role/plan/x" cannot get resource "secrets" in API group "" in the namespace "ws-admission"';
    expect(planFailureHints(forbidden)).toEqual([expect.stringContaining('`AmazonEKSViewPolicy` excludes Secrets')]);
    const unreachable =
      'Error: Get "https://ABC.gr7.eu-west-1.eks.amazonaws.com/api/v1/namespaces/ws-admission": dial tcp 10.0.1.5:443: i/o timeout';
    expect(planFailureHints(unreachable)).toEqual([expect.stringContaining('repository variable `PLAN_RUNNER`')]);
    const lock =
      'Error: Error acquiring the state lock\n\nError message: operation error S3: PutObject, https response error StatusCode: 403, api error AccessDenied';
    expect(planFailureHints(lock)).toEqual([expect.stringContaining('`.tflock` key')]);
    expect(planFailureHints('Error: Unsupported argument')).toEqual([]);
    const text = formatPlanComment({ plan: forbidden, stack: 's', outcome: 'failure' });
    expect(text).toContain('- The plan role is known to the cluster but may not read everything');
    expect(text).toContain('Setup: docs/operations.md, "CI: plans on pull requests".');
    expect(formatPlanComment({ plan: 'Error: Unsupported argument', stack: 's', outcome: 'failure' })).not.toContain('Setup:');
  });

  it('uses a longer fence when the plan itself contains one', () => {
    const text = formatPlanComment({ plan: 'a\n```\nb\nPlan: 1 to add, 0 to change, 0 to destroy.', stack: 's', outcome: 'success' });
    expect(text).toContain('````diff\n');
  });

  it('the CLI writes the comment file and refuses a bad outcome', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plan-'));
    const out = path.join(dir, 'c.md');
    expect(runPlanComment(['--plan', path.join(__dirname, 'fixtures', 'plan.txt'), '--stack', 'x', '--out', out]).code).toBe(0);
    expect(fs.readFileSync(out, 'utf8')).toContain('<!-- ws-admission-plan:x -->');
    expect(runPlanComment(['--plan', out, '--stack', 'x', '--outcome', 'maybe'])).toEqual({
      code: 2,
      text: 'plan-comment: --outcome must be success or failure, got maybe\n',
    });
    expect(runPlanComment(['--stack', 'x', '--marker'])).toEqual({ code: 0, text: '<!-- ws-admission-plan:x -->' });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
