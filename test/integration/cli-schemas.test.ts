// Every verb's --json output against its schema in docs/schemas (one schema per verb), on a real
// store made and damaged through the built CLI: clean and damaged validate, planned and done
// repairs (a rebuild from the backup, a hole under skip), a dump that meets the hole, inspect and
// status. The schemas forbid fields they do not name, so a renamed or added field fails here.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliProcess } from '../support/cli.js';
import { cliSchema, validateJson } from '../support/json-schema.js';

const VERBS = ['append', 'dump', 'validate', 'repair', 'inspect', 'status'] as const;
type Verb = (typeof VERBS)[number];
const SCHEMAS = Object.fromEntries(VERBS.map((v) => [v, cliSchema(v)])) as Record<Verb, Record<string, unknown>>;

const SEGMENT_BYTES = 4096;
const ENTRIES = 200;

let root: string;
let stores = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-cli-schemas-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Runs a verb with --json and checks every JSON document it printed against the verb's schema. */
async function conforming(verb: Verb, args: readonly string[], input = ''): Promise<{ code: number; documents: unknown[] }> {
  const result = await cliProcess([verb, ...args, '--json'], { WAL_RECOVERY_LOG_LEVEL: '' }, input);
  expect(result.code, result.stderr).not.toBe(2);
  const documents = verb === 'dump' ? result.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as unknown) : [JSON.parse(result.stdout) as unknown];
  for (const document of documents) expect(validateJson(document, SCHEMAS[verb]), JSON.stringify(document).slice(0, 400)).toEqual([]);
  return { code: result.code, documents };
}

async function makeStore(backups: number): Promise<string> {
  stores += 1;
  const dataDir = join(root, `store-${stores}`);
  const lines = Array.from({ length: ENTRIES }, (_, i) => `entry ${i + 1}`).join('\n');
  await conforming('append', ['--data-dir', dataDir, '--segment-bytes', String(SEGMENT_BYTES), '--backups', String(backups)], `${lines}\n`);
  return dataDir;
}

/** Flips a byte inside the payloads of sealed segment 2. */
async function damageSegmentTwo(dataDir: string): Promise<void> {
  const path = join(dataDir, 'segments', `${'2'.padStart(20, '0')}.wal`);
  const bytes = await readFile(path);
  const at = 128 + 40 + 3; // past the segment header and the first entry header: its payload
  bytes[at] = (bytes[at] ?? 0) ^ 0xff;
  await writeFile(path, bytes);
}

describe('--json output of every verb matches its schema in docs/schemas', () => {
  it('on a clean store: append, dump, validate, inspect, status, repair', async () => {
    const dataDir = await makeStore(1);
    const dumped = await conforming('dump', ['--data-dir', dataDir]);
    expect(dumped.documents).toHaveLength(ENTRIES);
    expect((await conforming('validate', ['--data-dir', dataDir])).code).toBe(0);
    await conforming('inspect', ['--data-dir', dataDir]);
    await conforming('inspect', ['--data-dir', dataDir, '--segment', '2']);
    expect((await conforming('status', ['--data-dir', dataDir])).code).toBe(0);
    expect((await conforming('repair', ['--data-dir', dataDir])).code).toBe(0);
  });

  it('on a damaged store: findings, planned and done repairs, a hole, and a dump over it', async () => {
    const withBackup = await makeStore(1);
    await damageSegmentTwo(withBackup);
    expect((await conforming('validate', ['--data-dir', withBackup])).code).toBe(1);
    expect((await conforming('status', ['--data-dir', withBackup])).code).toBe(1);
    await conforming('repair', ['--data-dir', withBackup, '--dry-run']);
    await conforming('repair', ['--data-dir', withBackup, '--strategy', 'halt']);
    expect((await conforming('repair', ['--data-dir', withBackup])).code).toBe(0);

    const noBackup = await makeStore(0);
    await damageSegmentTwo(noBackup);
    expect((await conforming('repair', ['--data-dir', noBackup, '--backups', '0'])).code).toBe(1);
    const skipped = await conforming('repair', ['--data-dir', noBackup, '--backups', '0', '--strategy', 'skip']);
    expect(skipped.documents[0]).toMatchObject({ entriesLost: 1 });
    const dump = await conforming('dump', ['--data-dir', noBackup, '--backups', '0']);
    expect(dump.documents.some((d) => (d as { lost?: boolean }).lost === true)).toBe(true);
    await conforming('inspect', ['--data-dir', noBackup]);
  });

  it('the schemas reject what they do not describe (the checker is not vacuous)', () => {
    expect(validateJson({ count: 1, firstIndex: 1, lastIndex: 1, extra: true }, SCHEMAS.append)).not.toEqual([]);
    expect(validateJson({ count: 1, firstIndex: 1 }, SCHEMAS.append)).not.toEqual([]);
    const snakeCaseFinding = { log: 'l', ok: false, findings: [{ kind: 'torn', log: 'l', detail: 'd', segment_id: 2 }] };
    expect(validateJson(snakeCaseFinding, SCHEMAS.validate)).not.toEqual([]);
    expect(validateJson({ log: 'l', strategy: 'sometimes', dryRun: false }, SCHEMAS.repair)).not.toEqual([]);
  });
});
