import * as fs from 'fs';
import * as path from 'path';
import { defaults } from '../../config/schema';
import { NAMES } from '../../constructs/names';

/**
 * Where the stack puts things by default (from the typed config's defaults and the
 * stack's object names); the commands take the loaded config and flags over these.
 */
export const DEFAULT_NAMESPACE = defaults().namespace;
export const DEFAULT_ENVOY_TARGET = `deployment/${NAMES.envoy}`;

/** The stack names cdktf synthesized, from cdktf.out/manifest.json. */
export function synthesizedStacks(projectDir: string, outDir = 'cdktf.out'): string[] {
  const file = path.join(projectDir, outDir, 'manifest.json');
  if (!fs.existsSync(file)) return [];
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as { stacks?: Record<string, unknown> };
  return Object.keys(manifest.stacks ?? {});
}

/** cdktf.json's `output` directory (default cdktf.out). */
export function cdktfOutDir(projectDir: string): string {
  const file = path.join(projectDir, 'cdktf.json');
  if (!fs.existsSync(file)) return 'cdktf.out';
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as { output?: string };
  return cfg.output ?? 'cdktf.out';
}

/** Picks the one stack to act on: the flag if given, else the only synthesized stack. */
export function chooseStack(requested: string | undefined, available: readonly string[]): string {
  if (requested) {
    if (available.length && !available.includes(requested)) {
      throw new Error(`stack "${requested}" is not in the synthesized app; stacks: ${available.join(', ')}`);
    }
    return requested;
  }
  if (available.length === 1) return available[0];
  if (available.length === 0) throw new Error('the app synthesized no stack (cdktf.out/manifest.json lists none)');
  throw new Error(`the app has several stacks (${available.join(', ')}): pass --stack NAME`);
}

/** Flattened `cdktf deploy --outputs-file` content: { stackName: { outputName: value } }. */
export type StackOutputs = Record<string, unknown>;

export function readOutputsFile(file: string, stack: string): StackOutputs {
  if (!fs.existsSync(file)) return {};
  const all = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, StackOutputs>;
  return all[stack] ?? {};
}

/** First output whose name matches (case-insensitive, ignoring - and _), as a non-empty string. */
export function findOutput(outputs: StackOutputs, ...names: string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '');
  const wanted = names.map(norm);
  for (const [k, v] of Object.entries(outputs)) {
    if (wanted.includes(norm(k)) && typeof v === 'string' && v) return v;
  }
  return undefined;
}
