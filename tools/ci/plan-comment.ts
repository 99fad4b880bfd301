/**
 * Formats a terraform plan as the pull-request comment CI posts (see
 * .github/workflows/pr.yml). Writes Markdown to --out (or stdout).
 *
 *   node tools/ci/plan-comment.js --plan plan.txt --stack ws-admission --outcome success \
 *     [--commit abc1234] [--run-url URL] [--artifact NAME] [--out comment.md]
 */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { commentMarker, formatPlanComment } from './comment';

export function runPlanComment(argv: readonly string[]): { code: number; text: string } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      plan: { type: 'string' },
      stack: { type: 'string' },
      outcome: { type: 'string', default: 'success' },
      commit: { type: 'string' },
      'run-url': { type: 'string' },
      artifact: { type: 'string' },
      out: { type: 'string' },
      marker: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (!values.stack) return { code: 2, text: 'plan-comment: --stack is required\n' };
  if (values.marker) return { code: 0, text: commentMarker(values.stack) };
  if (!values.plan) return { code: 2, text: 'plan-comment: --plan FILE is required\n' };
  if (values.outcome !== 'success' && values.outcome !== 'failure') {
    return { code: 2, text: `plan-comment: --outcome must be success or failure, got ${values.outcome}\n` };
  }
  const plan = fs.existsSync(values.plan) ? fs.readFileSync(values.plan, 'utf8') : `(no plan output: ${values.plan} does not exist)`;
  const text = formatPlanComment({
    plan,
    stack: values.stack,
    outcome: values.outcome,
    commit: values.commit?.slice(0, 12),
    runUrl: values['run-url'],
    artifactName: values.artifact,
  });
  if (values.out) {
    fs.writeFileSync(values.out, text);
    return { code: 0, text: '' };
  }
  return { code: 0, text };
}

if (require.main === module) {
  try {
    const r = runPlanComment(process.argv.slice(2));
    (r.code === 0 ? process.stdout : process.stderr).write(r.text);
    process.exit(r.code);
  } catch (err) {
    process.stderr.write(`plan-comment: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
}
