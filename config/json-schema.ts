import * as fs from 'fs';
import * as path from 'path';
import { FIELDS, FieldSpec } from './schema';

/**
 * A JSON Schema (draft 2020-12) of the config file (`WS_ADMISSION_CONFIG`), generated from
 * `FIELDS` like the README table, so that editors complete and check the file: point its
 * `"$schema"` at config/config.schema.json. The stack's own validation (config/validate.ts)
 * stays the authority: it also checks what a schema cannot say (the fields' relations).
 */
export const SCHEMA_PATH = path.resolve(__dirname, 'config.schema.json');

function property(f: FieldSpec): Record<string, unknown> {
  const base = { description: f.description, default: f.default };
  const str = (extra: Record<string, unknown> = {}) => ({ type: 'string', ...extra });
  switch (f.kind) {
    case 'integer':
      return {
        ...base,
        type: 'integer',
        ...(f.min !== undefined ? { minimum: f.min } : {}),
        ...(f.max !== undefined ? { maximum: f.max } : {}),
      };
    case 'boolean':
      return { ...base, type: 'boolean' };
    case 'enum':
      return { ...base, enum: [...(f.values ?? [])] };
    case 'labels':
      return { ...base, type: 'object', additionalProperties: { type: 'string' } };
    case 'cidrs':
    case 'list':
      return { ...base, type: 'array', items: str(f.pattern ? { pattern: f.pattern.re.source } : {}) };
    case 'string':
      return { ...base, ...str(f.pattern && !f.optional ? { pattern: f.pattern.re.source } : {}) };
    default:
      return { ...base, ...str() };
  }
}

export function configJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $comment: 'Generated from config/schema.ts (FIELDS) by `npm run docs:config`; do not edit.',
    title: 'ws-envoy-admission configuration file (WS_ADMISSION_CONFIG)',
    type: 'object',
    additionalProperties: false,
    properties: {
      $schema: { type: 'string' },
      $comment: { type: 'string' },
      ...Object.fromEntries(FIELDS.map((f) => [f.key, property(f)])),
    },
  };
}

export function renderConfigJsonSchema(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + '\n';
}

// `npm run docs:config` (after the README table) rewrites config/config.schema.json.
if (require.main === module) {
  const want = renderConfigJsonSchema();
  const have = fs.existsSync(SCHEMA_PATH) ? fs.readFileSync(SCHEMA_PATH, 'utf8') : '';
  if (want !== have) fs.writeFileSync(SCHEMA_PATH, want);
  process.stdout.write(want === have ? 'config/config.schema.json is up to date\n' : 'config/config.schema.json rewritten\n');
}
