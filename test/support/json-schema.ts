// The subset of JSON Schema (draft 2020-12) that docs/schemas uses: type (with "integer" and
// "null"), enum, const, minimum, maximum, required, properties, additionalProperties: false, items,
// anyOf and local $ref (#/$defs/name). Returns the errors, each with its path; [] when valid.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

type Schema = Record<string, unknown>;

const SCHEMA_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../docs/schemas');

/** The schema of one verb's --json output (docs/schemas/VERB.schema.json). */
export function cliSchema(verb: string): Schema {
  return JSON.parse(readFileSync(join(SCHEMA_DIR, `${verb}.schema.json`), 'utf8')) as Schema;
}

export function validateJson(value: unknown, root: Schema): string[] {
  const errors: string[] = [];
  check(value, root, root, '$', errors);
  return errors;
}

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && Number.isInteger(value)) return 'integer';
  return typeof value;
}

function resolveRef(root: Schema, ref: string): Schema {
  const name = /^#\/\$defs\/(.+)$/.exec(ref)?.[1];
  const target = name === undefined ? undefined : (root['$defs'] as Record<string, Schema> | undefined)?.[name];
  if (!target) throw new Error(`schema: unresolved $ref ${ref}`);
  return target;
}

function check(value: unknown, schema: Schema, root: Schema, path: string, errors: string[]): void {
  if (typeof schema['$ref'] === 'string') return check(value, resolveRef(root, schema['$ref']), root, path, errors);
  if (Array.isArray(schema['anyOf'])) {
    const branches = (schema['anyOf'] as Schema[]).map((branch) => validateJsonAt(value, branch, root, path));
    if (!branches.some((e) => e.length === 0)) errors.push(`${path}: matches no anyOf branch (${branches.map((e) => e[0]).join(' | ')})`);
    return;
  }
  if (schema['type'] !== undefined) {
    const allowed = Array.isArray(schema['type']) ? (schema['type'] as string[]) : [schema['type'] as string];
    const actual = typeOf(value);
    if (!allowed.includes(actual) && !(actual === 'integer' && allowed.includes('number'))) return void errors.push(`${path}: ${actual}, expected ${allowed.join(' or ')}`);
  }
  if ('const' in schema && value !== schema['const']) errors.push(`${path}: ${JSON.stringify(value)} is not ${JSON.stringify(schema['const'])}`);
  if (Array.isArray(schema['enum']) && !(schema['enum'] as unknown[]).includes(value)) errors.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema['enum'])}`);
  if (typeof schema['minimum'] === 'number' && typeof value === 'number' && value < schema['minimum']) errors.push(`${path}: ${value} < ${schema['minimum']}`);
  if (typeof schema['maximum'] === 'number' && typeof value === 'number' && value > schema['maximum']) errors.push(`${path}: ${value} > ${schema['maximum']}`);
  if (Array.isArray(value) && schema['items']) value.forEach((item, i) => check(item, schema['items'] as Schema, root, `${path}[${i}]`, errors));
  if (typeOf(value) === 'object') checkObject(value as Record<string, unknown>, schema, root, path, errors);
}

function checkObject(value: Record<string, unknown>, schema: Schema, root: Schema, path: string, errors: string[]): void {
  const properties = (schema['properties'] ?? {}) as Record<string, Schema>;
  for (const name of (schema['required'] ?? []) as string[]) if (!(name in value)) errors.push(`${path}: missing ${name}`);
  for (const [name, field] of Object.entries(value)) {
    const sub = properties[name];
    if (sub) check(field, sub, root, `${path}.${name}`, errors);
    else if (schema['additionalProperties'] === false) errors.push(`${path}: unexpected field ${name}`);
  }
}

function validateJsonAt(value: unknown, schema: Schema, root: Schema, path: string): string[] {
  const errors: string[] = [];
  check(value, schema, root, path, errors);
  return errors;
}
