// The JSON Schema of the config file (config/config.schema.json), generated from the field
// table like the README's: editors complete and check a config file with it.
import * as fs from 'fs';
import * as path from 'path';
import Ajv2020 from 'ajv/dist/2020';
import { SCHEMA_PATH, configJsonSchema, renderConfigJsonSchema } from '../../config/json-schema';
import { FIELDS } from '../../config/schema';

const ajv = new Ajv2020({ allErrors: true, strict: true });
const validate = ajv.compile(configJsonSchema());
const errorsOf = (doc: unknown) => (validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`));

describe('config/config.schema.json', () => {
  it('is the one `npm run docs:config` generates from FIELDS (run it after changing a field)', () => {
    expect(fs.readFileSync(SCHEMA_PATH, 'utf8')).toBe(renderConfigJsonSchema());
  });

  it('names every field, with its description and default', () => {
    const props = configJsonSchema().properties as Record<string, { description: string; default: unknown }>;
    for (const f of FIELDS)
      expect({ key: f.key, description: props[f.key]?.description, default: props[f.key]?.default }).toEqual({
        key: f.key,
        description: f.description,
        default: f.default,
      });
  });

  it('GIVEN config/example.json (which points its $schema at it) THEN it is valid', () => {
    const example = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'config', 'example.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(example.$schema).toBe('./config.schema.json');
    expect(errorsOf(example)).toEqual([]);
  });

  it.each([
    [{ envoyReplicas: '2' }, '/envoyReplicas must be integer'],
    [{ envoyReplicas: 0 }, '/envoyReplicas must be >= 1'],
    [{ redisFailureMode: 'maybe' }, '/redisFailureMode must be equal to one of the allowed values'],
    [{ region: 'Europe' }, '/region must match pattern'],
    [{ envoyReplcas: 2 }, ' must NOT have additional properties'],
    [{ serviceMonitorLabels: { team: 1 } }, '/serviceMonitorLabels/team must be string'],
  ])('GIVEN %j THEN an editor is told: %s', (doc, message) => {
    expect(errorsOf(doc).join('; ')).toContain(message);
  });
});
