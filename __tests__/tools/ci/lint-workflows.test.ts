// tools/ci/lint-workflows.ts (`npm run lint:workflows`) and the workflows it lints (.github/workflows).
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';
import { lintWorkflows, loadActionlint, unpinnedActions } from '../../../tools/ci/lint-workflows';

const DIR = path.join(__dirname, '..', '..', '..', '.github', 'workflows');

// These lint the files; no workflow runs here.
describe('GitHub workflows', () => {
  it('pass actionlint and pin every action to a commit SHA', async () => {
    const findings = await lintWorkflows(DIR);
    expect(findings.map((f) => `${path.basename(f.file)}:${f.line}: ${f.message}`)).toEqual([]);
  });

  it('the linter does catch mistakes (it is not a no-op)', async () => {
    const lint = loadActionlint();
    const bad = 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n';
    const found = await lint(bad, 'bad.yml');
    expect(found.some((f) => f.message.includes('"nope"'))).toBe(true);
    expect(unpinnedActions('x.yml', 'jobs:\n  a:\n    steps:\n      - uses: actions/checkout@v5\n')).toEqual([
      { file: 'x.yml', line: 4, column: 1, kind: 'pin', message: 'action "actions/checkout@v5" is not pinned to a full commit SHA' },
    ]);
  });

  it('the PR workflow plans with OIDC, one comment per PR, concurrency per PR', () => {
    const wf = parse(fs.readFileSync(path.join(DIR, 'pr.yml'), 'utf8'));
    expect(wf.on.pull_request).toBeDefined();
    expect(wf.concurrency).toEqual({ group: 'plan-${{ github.event.pull_request.number }}', 'cancel-in-progress': true });
    const plan = wf.jobs.plan;
    expect(plan.permissions).toEqual({ 'id-token': 'write', contents: 'read', 'pull-requests': 'write' });
    const aws = plan.steps.find((s: { uses?: string }) => s.uses?.startsWith('aws-actions/configure-aws-credentials@'));
    expect(aws.with['role-to-assume']).toBe('${{ vars.AWS_PLAN_ROLE_ARN }}');
    const runs = plan.steps.map((s: { run?: string }) => s.run ?? '').join('\n');
    for (const cmd of [
      'terraform init',
      'terraform validate',
      'terraform plan',
      'terraform show -no-color tfplan',
      'tools/ci/plan-comment.js',
    ])
      expect(runs).toContain(cmd);
    expect(plan.steps.some((s: { uses?: string }) => s.uses?.startsWith('actions/upload-artifact@'))).toBe(true);
    expect(plan.steps.some((s: { uses?: string }) => s.uses?.startsWith('actions/github-script@'))).toBe(true);
    expect(wf.jobs.plan.if).toBe('github.event.pull_request.head.repo.full_name == github.repository');
    // The credentials are behind an environment's required reviewers, and no install
    // script of the pull request's dependencies runs in that job.
    expect(plan.environment).toBe('plan');
    const installs = plan.steps.filter((s: { run?: string }) => /npm ci/.test(s.run ?? ''));
    expect(installs.map((s: { run: string }) => s.run)).toEqual(['npm ci --no-audit --no-fund --ignore-scripts']);
    const test = wf.jobs.test.steps.map((s: { run?: string }) => s.run ?? '').join('\n');
    for (const cmd of ['redis-server redis-tools luajit lua-socket lua-sec', 'npm ci', 'tsc --noEmit', 'npm test', 'npm run synth'])
      expect(test).toContain(cmd);
  });

  it('the test job installs every package .ci/run installs, and the plan job can move to a runner that reaches the cluster', () => {
    const wf = parse(fs.readFileSync(path.join(DIR, 'pr.yml'), 'utf8'));
    const ci = fs.readFileSync(path.join(DIR, '..', '..', '.ci', 'run'), 'utf8');
    const ciPackages = /^APT_PACKAGES=\(([^)]*)\)$/m.exec(ci)![1].trim().split(/\s+/);
    const install = wf.jobs.test.steps
      .map((s: { run?: string }) => s.run ?? '')
      .join('\n')
      .split('\n')
      .find((l: string) => l.includes('apt-get install'))!;
    for (const p of ciPackages) expect(install.split(/\s+/)).toContain(p);
    expect(wf.jobs.plan['runs-on']).toBe("${{ vars.PLAN_RUNNER || 'ubuntu-24.04' }}");
    expect(wf.jobs.plan.env).toEqual({ TF_IN_AUTOMATION: '1', TF_INPUT: '0' });
  });

  it('the plan job names missing repository variables, and a failing init reaches the comment like a failing plan', () => {
    const wf = parse(fs.readFileSync(path.join(DIR, 'pr.yml'), 'utf8'));
    const steps = wf.jobs.plan.steps as Array<{ id?: string; name?: string; run?: string; env?: Record<string, string>; if?: string }>;
    const check = steps.find((s) => s.name === 'Check the repository settings')!;
    expect(check.env).toEqual({
      ROLE: '${{ vars.AWS_PLAN_ROLE_ARN }}',
      REGION: '${{ vars.AWS_REGION }}',
      CONFIG_JSON: '${{ vars.WS_ADMISSION_CONFIG_JSON }}',
    });
    for (const v of ['AWS_PLAN_ROLE_ARN', 'AWS_REGION', 'WS_ADMISSION_CONFIG_JSON']) expect(check.run).toContain(`missing="$missing ${v}"`);
    expect(steps.indexOf(check)).toBeLessThan(steps.findIndex((s) => s.id === 'synth'));
    const plan = steps.find((s) => s.id === 'plan')!;
    for (const cmd of ['terraform init', 'terraform validate', 'terraform plan']) expect(plan.run).toContain(`step ${cmd}`);
    expect(plan.run).toContain('echo "outcome=failure" >> "$GITHUB_OUTPUT"');
    expect(plan.run).toContain('rm -f tfplan');
    expect(steps.find((s) => s.name === 'Format the comment')!.if).toBe("always() && steps.plan.outputs.outcome != ''");
  });

  it('the e2e workflow runs the compose kit on demand or with the e2e label', () => {
    const wf = parse(fs.readFileSync(path.join(DIR, 'e2e.yml'), 'utf8'));
    expect(Object.keys(wf.on)).toEqual(['workflow_dispatch', 'pull_request']);
    expect(wf.jobs.e2e.if).toContain("contains(github.event.pull_request.labels.*.name, 'e2e')");
    const runs = wf.jobs.e2e.steps.map((s: { run?: string }) => s.run ?? '').join('\n');
    for (const cmd of ['npm run e2e:generate', 'docker compose up --detach --build --wait', 'npm run e2e:check', 'docker compose down'])
      expect(runs).toContain(cmd);
    expect(wf.jobs.e2e.env.COMPOSE_FILE).toBe('e2e/docker-compose.yml');
  });
});
