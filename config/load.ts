import * as fs from 'fs';
import * as path from 'path';
import { CONFIG_FILE_ENV, ENV_PREFIX, FIELDS, FieldSpec, REMOVED_FIELDS, StackConfig, defaults, envName } from './schema';
import { ConfigError, configProblems, show } from './validate';
import { distance as levenshtein } from 'fastest-levenshtein';

export interface LoadConfigOptions {
  /**
   * JSON config file (an object of field names to values).
   * @default - the file named by `WS_ADMISSION_CONFIG`, else none
   */
  readonly file?: string;
  /**
   * Environment to read `WS_ADMISSION_*` variables from.
   * @default process.env
   */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Values applied last (used by tests and by callers that embed the stack).
   * @default - none
   */
  readonly overrides?: Partial<StackConfig>;
}

const BY_KEY = new Map<string, FieldSpec>(FIELDS.map((f) => [f.key, f]));
const BY_ENV = new Map<string, FieldSpec>(FIELDS.map((f) => [envName(f.key), f]));
const REMOVED_BY_ENV = new Map<string, string>(Object.keys(REMOVED_FIELDS).map((k) => [envName(k), k]));

/**
 * Resolves the configuration: defaults < JSON file < `WS_ADMISSION_*` environment
 * variables < `overrides`, then validates the result. Unknown keys in the file and
 * unknown `WS_ADMISSION_*` variables are refused (a typo must not silently fall back
 * to a default).
 */
export function loadConfig(options: LoadConfigOptions = {}): StackConfig {
  const env = options.env ?? process.env;
  const merged: Record<string, unknown> = { ...defaults() };
  const problems: string[] = [];

  const file = options.file ?? (env[CONFIG_FILE_ENV] || undefined);
  if (file !== undefined) Object.assign(merged, readConfigFile(file, problems));
  Object.assign(merged, readEnv(env, problems));
  Object.assign(merged, options.overrides ?? {});
  // Report the source problems and the value problems together, in one go.
  problems.push(...configProblems(merged as unknown as StackConfig));
  if (problems.length > 0) throw new ConfigError(problems);
  return merged as unknown as StackConfig;
}

function readConfigFile(file: string, problems: string[]): Record<string, unknown> {
  const where = path.resolve(file);
  let text: string;
  try {
    text = fs.readFileSync(where, 'utf8');
  } catch (e) {
    problems.push(`config file ${show(file)} cannot be read (${(e as Error).message}). Fix: check the path in ${CONFIG_FILE_ENV}.`);
    return {};
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    problems.push(`config file ${show(file)} is not valid JSON (${(e as Error).message}).`);
    return {};
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    problems.push(`config file ${show(file)} must hold a JSON object of field names to values, got ${show(data)}.`);
    return {};
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    if (key === '$schema' || key === '$comment') continue;
    if (Object.hasOwn(REMOVED_FIELDS, key)) {
      problems.push(`config file ${show(file)} sets ${show(key)}, which was removed: ${REMOVED_FIELDS[key]}. Fix: remove it.`);
      continue;
    }
    if (!BY_KEY.has(key)) {
      problems.push(`config file ${show(file)} has an unknown key ${show(key)}. Fix: ${suggest(key, [...BY_KEY.keys()])}`);
      continue;
    }
    out[key] = value;
  }
  return out;
}

function readEnv(env: NodeJS.ProcessEnv, problems: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || name === CONFIG_FILE_ENV || raw === undefined) continue;
    const f = BY_ENV.get(name);
    const removed = REMOVED_BY_ENV.get(name);
    if (removed) {
      problems.push(`environment variable ${name} sets ${show(removed)}, which was removed: ${REMOVED_FIELDS[removed]}. Fix: unset it.`);
      continue;
    }
    if (!f) {
      problems.push(`environment variable ${name} is not a known setting. Fix: ${suggest(name, [...BY_ENV.keys(), CONFIG_FILE_ENV])}`);
      continue;
    }
    const parsed = parseEnvValue(f, name, raw, problems);
    if (parsed !== undefined) out[f.key] = parsed;
  }
  return out;
}

/** Parses an environment string into the field's type; pushes a problem and returns undefined if it cannot. */
export function parseEnvValue(f: FieldSpec, name: string, raw: string, problems: string[]): unknown {
  const v = raw.trim();
  switch (f.kind) {
    case 'integer':
      if (!/^[+-]?\d+$/.test(v)) {
        problems.push(`${f.key} must be an integer, got ${show(raw)} (from ${name}). Fix: e.g. ${name}=${show(f.default)}.`);
        return undefined;
      }
      return Number(v);
    case 'boolean':
      if (/^(true|1|yes)$/i.test(v)) return true;
      if (/^(false|0|no)$/i.test(v)) return false;
      problems.push(`${f.key} must be true or false, got ${show(raw)} (from ${name}).`);
      return undefined;
    case 'labels': {
      const labels: Record<string, string> = {};
      for (const part of v
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '')) {
        const eq = part.indexOf('=');
        if (eq <= 0) {
          problems.push(`${f.key} must be written as key=value[,key=value], got ${show(raw)} (from ${name}).`);
          return undefined;
        }
        labels[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
      }
      return labels;
    }
    case 'cidrs':
    case 'list':
      return v
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '');
    default:
      return v;
  }
}

function suggest(bad: string, known: string[]): string {
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');
  const close = known.find((k) => norm(k) === norm(bad)) ?? known.find((k) => levenshtein(norm(k), norm(bad)) <= 2);
  return close ? `did you mean ${show(close)}?` : 'remove it; the known settings are listed in README.md (Configuration).';
}
