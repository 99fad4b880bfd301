import * as fs from 'fs';
import * as path from 'path';
import { FIELDS, FieldSpec, envName } from './schema';

export const TABLE_START = '<!-- config-table:start -->';
export const TABLE_END = '<!-- config-table:end -->';

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function defaultText(f: FieldSpec): string {
  if (f.kind === 'labels') {
    const pairs = Object.entries(f.default as Record<string, string>).map(([k, v]) => `${k}=${v}`);
    // An empty code span renders as two stray backticks.
    return pairs.length === 0 ? '(none)' : '`' + pairs.join(',') + '`';
  }
  if (Array.isArray(f.default)) return f.default.length === 0 ? '(empty)' : '`' + f.default.join(',') + '`';
  if (f.default === '') return '(empty)';
  return '`' + (typeof f.default === 'object' ? JSON.stringify(f.default) : String(f.default)) + '`';
}

function typeText(f: FieldSpec): string {
  switch (f.kind) {
    case 'integer':
      if (f.max !== undefined && f.min === f.max) return `integer (only ${f.max})`;
      return f.max !== undefined ? `integer ${f.min ?? ''}..${f.max}` : `integer ≥ ${f.min ?? 0}`;
    case 'enum':
      // A plain "|": cell() escapes it once for the table (escaping here too gave "\\|").
      return (f.values ?? []).map((v) => `\`${v}\``).join(' | ');
    case 'labels':
      return 'labels';
    case 'cidrs':
      return 'CIDR list';
    case 'list':
      return 'list';
    case 'image':
      return 'image (pinned)';
    case 'dns1123Label':
      return 'DNS-1123 name';
    default:
      return f.kind;
  }
}

/** The Markdown table of every setting, generated from `FIELDS`. */
export function renderConfigTable(): string {
  const rows = [
    '| Setting (JSON key) | Environment variable | Type | Default | Description |',
    '|---|---|---|---|---|',
    ...FIELDS.map(
      (f) => `| \`${f.key}\` | \`${envName(f.key)}\` | ${cell(typeText(f))} | ${cell(defaultText(f))} | ${cell(f.description)} |`,
    ),
  ];
  return rows.join('\n');
}

/** `readme` with the text between the markers replaced by the current table. */
export function withConfigTable(readme: string): string {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start < 0 || end < start) {
    throw new Error(`README.md must contain ${TABLE_START} followed by ${TABLE_END}; add both markers where the table belongs`);
  }
  return readme.slice(0, start + TABLE_START.length) + '\n' + renderConfigTable() + '\n' + readme.slice(end);
}

export const README_PATH = path.resolve(__dirname, '..', 'README.md');

// `npm run docs:config` rewrites the table in README.md.
if (require.main === module) {
  const before = fs.readFileSync(README_PATH, 'utf8');
  const after = withConfigTable(before);
  if (after !== before) fs.writeFileSync(README_PATH, after);
  process.stdout.write(after === before ? 'README.md configuration table is up to date\n' : 'README.md configuration table rewritten\n');
}
