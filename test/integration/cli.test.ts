// The `wal-recovery` command line, run as a real process (node dist/cli/main.js) on real
// directories: every test spawns the built CLI, feeds stdin, and checks stdout, stderr, the exit
// code and the files on disk. `npm test` builds dist/ first (pretest).
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProgress, renderBar } from '../../src/cli/progress.js';
import type { RepairReport, ValidationReport } from '../../src/index.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(REPO_ROOT, 'dist/cli/main.js');
const SEGMENT_BYTES = 4096;
const SEGMENT_HEADER_BYTES = 128;
const ENTRY_HEADER_BYTES = 40;
const RUN_TIMEOUT_MS = 30_000;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stdoutBytes: Buffer;
  readonly stderr: string;
}

function run(args: readonly string[], input?: string | Buffer, extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv };
    delete env['WAL_RECOVERY_LOG_LEVEL'];
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      resolvePromise({ code, stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => undefined); // a CLI that fails before reading stdin closes it
    child.stdin.end(input ?? '');
  });
}

/** Every file under dir (relative path -> sha256), to prove a command changed nothing. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else files.set(relative(dir, path), createHash('sha256').update(await readFile(path)).digest('hex'));
    }
  };
  await walk(dir);
  return files;
}

function segmentPath(dataDir: string, segment: number): string {
  return join(dataDir, 'segments', `${String(segment).padStart(20, '0')}.wal`);
}

async function flipByte(path: string, offsetBytes: number): Promise<void> {
  const bytes = await readFile(path);
  const at = bytes[offsetBytes];
  if (at === undefined) throw new Error(`offset ${offsetBytes} is past the end of ${path}`);
  bytes[offsetBytes] = at ^ 0xff;
  await writeFile(path, bytes);
}

/** Fixed-length payloads (so frame offsets are computable), with non-ASCII text in them. */
const PAYLOAD_BYTES = Buffer.byteLength(payloadOf(1));
function payloadOf(i: number): string {
  return `payload ${String(i).padStart(5, '0')} – ünïcode`;
}
const LINES = Array.from({ length: 400 }, (_, i) => payloadOf(i + 1));

function parseNdjson(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function expectOneLineError(result: Run, code: number, pattern: RegExp): void {
  expect(result.code).toBe(code);
  const lines = result.stderr.split('\n').filter((line) => line !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^wal-recovery: /);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

let root: string;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
  root = await mkdtemp(join(tmpdir(), 'wal-cli-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let storeCount = 0;
/** A fresh store holding LINES in several sealed segments of SEGMENT_BYTES. */
async function makeStore(extra: readonly string[] = []): Promise<string> {
  storeCount += 1;
  const dataDir = join(root, `store-${storeCount}`);
  const result = await run(['append', '--data-dir', dataDir, '--segment-bytes', String(SEGMENT_BYTES), '--json', ...extra], `${LINES.join('\n')}\n`);
  expect(result.code, result.stderr).toBe(0);
  return dataDir;
}

async function validateJson(dataDir: string, extra: readonly string[] = []): Promise<{ code: number | null; report: ValidationReport }> {
  const result = await run(['validate', '--data-dir', dataDir, '--json', ...extra]);
  return { code: result.code, report: JSON.parse(result.stdout) as ValidationReport };
}

async function dumpPayloads(dataDir: string): Promise<string[]> {
  const result = await run(['dump', '--data-dir', dataDir, '--json']);
  expect(result.code, result.stderr).toBe(0);
  return parseNdjson(result.stdout).map((r) => Buffer.from(String(r['payload']), 'base64').toString('utf8'));
}

/** Damages the payload of the 4th entry of sealed segment 2; returns the index it holds. */
async function damageSegmentTwo(dataDir: string): Promise<number> {
  const { report } = await validateJson(dataDir);
  const segment = report.segments.find((s) => s.segment === 2);
  if (segment?.firstIndex === undefined || segment.state !== 'sealed') throw new Error('segment 2 should be sealed');
  const slot = 3;
  await flipByte(segmentPath(dataDir, 2), SEGMENT_HEADER_BYTES + slot * (ENTRY_HEADER_BYTES + PAYLOAD_BYTES) + ENTRY_HEADER_BYTES + 5);
  return segment.firstIndex + slot;
}

describe('append and dump', () => {
  it('appends one entry per stdin line and dumps them back, text and JSON, with --from/--to', async () => {
    const dataDir = join(root, 'append-dump');
    const appended = await run(['append', '--data-dir', dataDir, '--segment-bytes', String(SEGMENT_BYTES), '--json'], `${LINES.join('\n')}\n`);
    expect(appended.code, appended.stderr).toBe(0);
    expect(JSON.parse(appended.stdout)).toEqual({ count: LINES.length, firstIndex: 1, lastIndex: LINES.length });

    const more = await run(['append', '--data-dir', dataDir], 'one more\nand another');
    expect(more.code, more.stderr).toBe(0);
    expect(more.stdout).toMatch(/appended 2 entries: first index 401, last index 402/);

    const json = await run(['dump', '--data-dir', dataDir, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const records = parseNdjson(json.stdout);
    expect(records.map((r) => r['index'])).toEqual(Array.from({ length: 402 }, (_, i) => i + 1));
    expect(records.map((r) => Buffer.from(String(r['payload']), 'base64').toString('utf8'))).toEqual([...LINES, 'one more', 'and another']);
    expect(records[0]?.['checksum']).toMatch(/^[0-9a-f]{16}$/);

    const text = await run(['read', '--data-dir', dataDir, '--from', '10', '--to', '12']);
    expect(text.code, text.stderr).toBe(0);
    const rows = text.stdout.trimEnd().split('\n').map((line) => line.split('\t'));
    expect(rows.map((r) => r[0])).toEqual(['10', '11', '12']);
    expect(rows.map((r) => r[2])).toEqual([payloadOf(10), payloadOf(11), payloadOf(12)]);
    expect(rows.map((r) => r[1])).toEqual(records.slice(9, 12).map((r) => r['checksum']));

    const tail = await run(['dump', '--data-dir', dataDir, '--json', '--from', '400']);
    expect(parseNdjson(tail.stdout).map((r) => r['index'])).toEqual([400, 401, 402]);
  });

  it('keeps binary payloads byte for byte: base64 in JSON, marked base64 in text', async () => {
    const dataDir = join(root, 'binary');
    const binary = Buffer.from([0xff, 0x00, 0xfe, 0x7f]);
    const result = await run(['append', '--data-dir', dataDir], Buffer.concat([binary, Buffer.from('\nplain\n')]));
    expect(result.code, result.stderr).toBe(0);
    const json = parseNdjson((await run(['dump', '--data-dir', dataDir, '--json'])).stdout);
    expect(Buffer.from(String(json[0]?.['payload']), 'base64').equals(binary)).toBe(true);
    const text = await run(['dump', '--data-dir', dataDir]);
    expect(text.stdout.split('\n')[0]?.split('\t')[2]).toBe(`base64:${binary.toString('base64')}`);
    expect(text.stdout.split('\n')[1]?.split('\t')[2]).toBe('plain');
  });

  it('refuses a line longer than the log accepts with exit 2, appending nothing of that batch', async () => {
    const dataDir = join(root, 'too-long');
    const result = await run(['append', '--data-dir', dataDir, '--segment-bytes', String(SEGMENT_BYTES)], `short\n${'x'.repeat(SEGMENT_BYTES)}\n`);
    expectOneLineError(result, 2, /larger than entryBytesMax/);
    expect((await run(['dump', '--data-dir', dataDir])).stdout).toBe('');
  });

  it('names the entries it appended before a too-long line cut the input short', async () => {
    const dataDir = join(root, 'partial-append');
    const short = Array.from({ length: 5000 }, (_, i) => `line ${i + 1}`);
    const result = await run(['append', '--data-dir', dataDir, '--segment-bytes', String(SEGMENT_BYTES)], `${short.join('\n')}\n${'x'.repeat(SEGMENT_BYTES)}\n`);
    expectOneLineError(result, 2, /larger than entryBytesMax .*\(indices 1\.\.(\d+) were appended before it\)/);
    const lastIndex = Number(/indices 1\.\.(\d+)/.exec(result.stderr)?.[1]);
    const dumped = await dumpPayloads(dataDir);
    expect(dumped.length).toBe(lastIndex);
    expect(dumped).toEqual(short.slice(0, lastIndex));
  });

  it('exits 2 when another live process holds the store lock', async () => {
    const dataDir = await makeStore();
    await writeFile(join(dataDir, 'LOCK'), `${process.pid}\n`);
    try {
      expectOneLineError(await run(['append', '--data-dir', dataDir], 'x\n'), 2, /locked by process/);
    } finally {
      await rm(join(dataDir, 'LOCK'));
    }
  });

  it('exits 1 when dump reaches an entry that fails verification, after the entries before it', async () => {
    const dataDir = await makeStore();
    const damaged = await damageSegmentTwo(dataDir);
    const result = await run(['dump', '--data-dir', dataDir, '--json']);
    expect(result.code).toBe(1);
    // The store's own warnings (pino JSON, on by default for dump) come first; the error is last.
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines.slice(0, -1).every((line) => (JSON.parse(line) as { segment?: number }).segment === 2)).toBe(true);
    expect(lines[lines.length - 1]).toMatch(new RegExp(`^wal-recovery: .*entry ${damaged} is damaged`));
    expect(result.stderr).not.toMatch(/^\s+at /m);
    const records = parseNdjson(result.stdout);
    expect(records.map((r) => r['index'])).toEqual(Array.from({ length: damaged - 1 }, (_, i) => i + 1));
  });
});

describe('validate', () => {
  it('exits 0 on a clean store, with the report as JSON and a summary line as text', async () => {
    const dataDir = await makeStore();
    const { code, report } = await validateJson(dataDir);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.findings).toEqual([]);
    expect(report.segments.length).toBeGreaterThan(3);
    expect(report.segments.slice(0, -1).every((s) => s.state === 'sealed')).toBe(true);
    const text = await run(['validate', '--data-dir', dataDir]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^ok: log 'default' is clean/);
  });

  it('exits 1 on a flipped byte in a sealed segment and names segment, entry, offset and kind', async () => {
    const dataDir = await makeStore();
    const damaged = await damageSegmentTwo(dataDir);
    const { code, report } = await validateJson(dataDir);
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    const finding = report.findings.find((f) => f.segment === 2);
    expect(finding).toMatchObject({ kind: 'checksum-mismatch', log: 'default', segment: 2, entryIndex: damaged, file: 'segments/00000000000000000002.wal' });
    expect(finding?.offsetBytes).toBe(SEGMENT_HEADER_BYTES + 3 * (ENTRY_HEADER_BYTES + PAYLOAD_BYTES));
    const text = await run(['validate', '--data-dir', dataDir]);
    expect(text.code).toBe(1);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(report.findings.length + 1);
    expect(lines[0]).toMatch(new RegExp(`^checksum-mismatch \\(segment 2, entry ${damaged}, offset \\d+`));
    expect(lines[lines.length - 1]).toMatch(/^damage: 1 finding/);
  });

  it('validate --threads N reports the same findings; --threads 0 exits 2 with one line', async () => {
    const dataDir = await makeStore();
    await damageSegmentTwo(dataDir);
    const one = await validateJson(dataDir);
    const two = await validateJson(dataDir, ['--threads', '2']);
    expect(two.code).toBe(1);
    expect(two.report.findings).toEqual(one.report.findings);
    const bad = await run(['validate', '--data-dir', dataDir, '--threads', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('draws no progress bar when stderr is a pipe', async () => {
    const dataDir = await makeStore();
    await damageSegmentTwo(dataDir);
    for (const args of [['validate'], ['repair', '--dry-run'], ['repair']]) {
      const result = await run([...args, '--data-dir', dataDir]);
      expect(result.code).not.toBe(2);
      expect(result.stderr).toBe('');
      expect(result.stdout).not.toContain('\r');
    }
  });
});

describe('repair', () => {
  it('--dry-run changes no byte on disk and reports what it would do', async () => {
    const dataDir = await makeStore();
    const damaged = await damageSegmentTwo(dataDir);
    const before = await snapshot(dataDir);
    const result = await run(['repair', '--data-dir', dataDir, '--dry-run', '--json']);
    expect(result.code).toBe(1); // nothing repaired: the damage remains
    const report = JSON.parse(result.stdout) as RepairReport;
    expect(report).toMatchObject({ dryRun: true, strategy: 'partial', entriesRepaired: 1, entriesLost: 0 });
    expect(report.actions.length).toBeGreaterThan(0);
    expect(report.actions.every((a) => a.outcome === 'planned')).toBe(true);
    expect(report.actions.find((a) => a.segment === 2)).toMatchObject({ decision: 'reconstruct', repaired: [{ first: damaged, last: damaged }] });
    expect(report.remaining.length).toBe(report.findings.length);
    expect(await snapshot(dataDir)).toEqual(before);
  });

  it('--strategy halt exits 1 and changes nothing', async () => {
    const dataDir = await makeStore();
    await damageSegmentTwo(dataDir);
    const before = await snapshot(dataDir);
    const result = await run(['repair', '--data-dir', dataDir, '--strategy', 'halt', '--json']);
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as RepairReport;
    expect(report.strategy).toBe('halt');
    expect(report.actions.find((a) => a.segment === 2)?.outcome).toBe('halted');
    expect(report.remaining.some((f) => f.segment === 2)).toBe(true);
    expect(await snapshot(dataDir)).toEqual(before);
    expect((await validateJson(dataDir)).code).toBe(1);
  });

  it('repairs from the local backup: exit 0, then validate exits 0 and dump equals what was appended', async () => {
    const dataDir = await makeStore();
    const damaged = await damageSegmentTwo(dataDir);
    const result = await run(['repair', '--data-dir', dataDir]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`segment 2: reconstruct done: .*repaired ${damaged}`));
    expect(result.stdout).toMatch(/entries repaired: 1, lost: 0, truncated: 0/);
    expect(result.stdout).toMatch(/ok: the store validates clean/);
    expect((await validateJson(dataDir)).code).toBe(0);
    expect(await dumpPayloads(dataDir)).toEqual(LINES);
  });

  it('--strategy skip without a backup records a hole that dump shows as lost and validate lists but accepts', async () => {
    const dataDir = await makeStore(['--backups', '0']);
    const damaged = await damageSegmentTwo(dataDir);
    const refused = await run(['repair', '--data-dir', dataDir, '--backups', '0']);
    expect(refused.code).toBe(1); // partial has no copy to rebuild from, and drops nothing
    const result = await run(['repair', '--data-dir', dataDir, '--backups', '0', '--strategy', 'skip', '--json']);
    expect(result.code, result.stdout).toBe(0);
    expect((JSON.parse(result.stdout) as RepairReport).entriesLost).toBe(1);
    const { code, report } = await validateJson(dataDir, ['--backups', '0']);
    expect(code).toBe(0);
    expect(report.holes).toEqual([{ segmentId: 2, firstIndex: damaged, count: 1 }]);
    const dump = parseNdjson((await run(['dump', '--data-dir', dataDir, '--json', '--backups', '0', '--from', String(damaged - 1), '--to', String(damaged + 1)])).stdout);
    expect(dump[1]).toMatchObject({ index: damaged, lost: true });
    expect(dump[1]?.['payload']).toBeUndefined();
    expect(Buffer.from(String(dump[2]?.['payload']), 'base64').toString('utf8')).toBe(payloadOf(damaged + 1));
  });
});

describe('inspect and status', () => {
  it('lists segments, or one with --segment, and exits 2 for a segment that does not exist', async () => {
    const dataDir = await makeStore();
    const all = await run(['inspect', '--data-dir', dataDir, '--json']);
    expect(all.code).toBe(0);
    const segments = (JSON.parse(all.stdout) as { segments: Array<{ segment: number; firstIndex: number; lastIndex: number; aggregateChecksum: string }> }).segments;
    expect(segments.length).toBeGreaterThan(3);
    expect(segments[0]?.firstIndex).toBe(1);
    expect(segments[segments.length - 1]?.lastIndex).toBe(LINES.length);
    const one = await run(['inspect', '--data-dir', dataDir, '--json', '--segment', '2']);
    expect((JSON.parse(one.stdout) as { segments: unknown[] }).segments).toEqual([segments[1]]);
    expectOneLineError(await run(['inspect', '--data-dir', dataDir, '--segment', '999']), 2, /no segment 999/);
    const status = await run(['status', '--data-dir', dataDir, '--json']);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ ok: true, firstIndex: 1, lastIndex: LINES.length, segmentCount: segments.length });
  });
});

describe('bad input', () => {
  it('a missing data directory exits 2 with one line and no stack trace, for every verb', async () => {
    const missing = join(root, 'does-not-exist');
    for (const verb of ['validate', 'repair', 'inspect', 'status', 'dump']) {
      expectOneLineError(await run([verb, '--data-dir', missing]), 2, /no WAL store at/);
    }
    expect(existsSync(missing)).toBe(false); // dump must not create what it was asked to read
  });

  it('a FIFO where a segment file or the catalog belongs is refused with exit 2, not waited on for ever', async () => {
    const dataDir = await makeStore();
    const segment = join(dataDir, 'segments', (await readdir(join(dataDir, 'segments'))).sort()[0] ?? '');
    await rm(segment);
    execFileSync('mkfifo', [segment]); // opening it for reading blocked until a writer came: validate hung
    for (const verb of ['validate', 'dump']) expectOneLineError(await run([verb, '--data-dir', dataDir]), 2, /is not a regular file/);
    const catalog = join(dataDir, 'CATALOG');
    await rm(catalog);
    execFileSync('mkfifo', [catalog]);
    expectOneLineError(await run(['validate', '--data-dir', dataDir]), 2, /CATALOG is not a regular file/);
  });

  it('a bad --strategy, a missing --data-dir, unknown options and verbs exit 2 with one line', async () => {
    const dataDir = await makeStore();
    expectOneLineError(await run(['repair', '--data-dir', dataDir, '--strategy', 'yolo']), 2, /--strategy.*yolo.*partial, skip, rollback, halt/);
    expectOneLineError(await run(['validate']), 2, /--data-dir DIR is required/);
    expectOneLineError(await run(['validate', '--data-dir', dataDir, '--frobnicate']), 2, /unknown option '--frobnicate'/);
    expectOneLineError(await run(['frobnicate']), 2, /unknown command 'frobnicate'/);
  });

  it('numeric options refuse negative, fractional and huge values with exit 2', async () => {
    const dataDir = await makeStore();
    for (const value of ['-1', '1.5', 'ten', '99999999999999999999', '0x10']) {
      expectOneLineError(await run(['dump', '--data-dir', dataDir, '--from', value]), 2, /--from <index>.*whole number/);
    }
    expectOneLineError(await run(['dump', '--data-dir', dataDir, '--from', '5', '--to', '2']), 2, /--from 5 is after --to 2/);
    expectOneLineError(await run(['append', '--data-dir', join(root, 'tiny'), '--segment-bytes', '100'], 'x\n'), 2, /segmentBytesMax/);
    expectOneLineError(await run(['append', '--data-dir', join(root, 'tiny'), '--backups', '256'], 'x\n'), 2, /--backups/);
    expectOneLineError(await run(['inspect', '--data-dir', dataDir, '--segment', '-3']), 2, /--segment/);
  });

  it('plaintext only when asked for: --target or node without TLS files and without --insecure is a usage error (exit 2)', async () => {
    const port = await closedPort();
    const noTls = { WAL_TLS_CA: '', WAL_TLS_CERT: '', WAL_TLS_KEY: '', WAL_INSECURE: '' };
    for (const verb of ['append', 'dump', 'status', 'validate']) {
      expectOneLineError(await run([verb, '--target', `127.0.0.1:${port}`], 'x\n', noTls), 2, /TLS is required: give --tls-ca, --tls-cert and --tls-key .* or --insecure \(or WAL_INSECURE=1\)/);
    }
    expectOneLineError(await run(['repair', '--target', `127.0.0.1:${port}`, '--segment', '1'], '', noTls), 2, /TLS is required/);
    const node = await run(['node', '--id', 'n1', '--data-dir', join(root, 'insecure-node'), '--listen', `127.0.0.1:${port}`, '--etcd', 'http://127.0.0.1:1'], '', noTls);
    expectOneLineError(node, 2, /TLS is required/);
    expectOneLineError(await run(['status', '--target', `127.0.0.1:${port}`, '--insecure'], '', { ...noTls, WAL_TLS_CA: join(root, 'ca.pem') }), 2, /--insecure .* goes without --tls-ca/);
    // A store on this machine needs no transport.
    expect((await run(['status', '--data-dir', join(root, 'no-store-here')], '', noTls)).stderr).not.toMatch(/TLS/);
  });

  it('--target with no node listening exits 2 with one line; repair --target needs --segment', async () => {
    const port = await closedPort();
    for (const verb of ['dump', 'status']) {
      expectOneLineError(await run([verb, '--target', `127.0.0.1:${port}`, '--insecure']), 2, /the node answered: .*\(gRPC status 14\)/);
    }
    expectOneLineError(await run(['append', '--target', `127.0.0.1:${port}`, '--insecure'], 'x\n'), 2, /gRPC status 14/);
    expectOneLineError(await run(['validate', '--target', `127.0.0.1:${port}`], '', { WAL_INSECURE: '1' }), 2, /gRPC status 14/);
    expectOneLineError(await run(['repair', '--target', `127.0.0.1:${port}`, '--segment', '1', '--insecure']), 2, /gRPC status 14/);
    expectOneLineError(await run(['repair', '--target', `127.0.0.1:${port}`, '--insecure']), 2, /needs --segment/);
    expectOneLineError(await run(['validate', '--target', 'no-port']), 2, /HOST:PORT/);
    expectOneLineError(await run(['dump', '--data-dir', root, '--log', 'x']), 2, /--log .* goes with --target/);
  });

  it('--verbose adds the stack of an error after its one line', async () => {
    const result = await run(['validate', '--data-dir', join(root, 'absent'), '--verbose']);
    expect(result.code).toBe(2);
    expect(result.stderr.split('\n')[0]).toMatch(/^wal-recovery: .*no WAL store/);
    expect(result.stderr).toMatch(/^\s+at /m);
  });
});

/** A loopback port with nothing listening on it (bound, then closed). */
async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 1));
    });
  });
}

const SCRIPT = '/usr/bin/script'; // util-linux: runs a command on a pseudo-terminal

describe('progress bar', () => {
  it.skipIf(!existsSync(SCRIPT))('is drawn on stderr when it is a real terminal', async () => {
    const dataDir = await makeStore();
    const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
    const command = [process.execPath, CLI, 'validate', '--data-dir', dataDir].map(quote).join(' ');
    const result = await new Promise<{ code: number | null; output: string }>((resolvePromise, reject) => {
      const child = spawn(SCRIPT, ['-qec', command, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const chunks: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => chunks.push(b));
      child.on('error', reject);
      child.on('close', (code) => resolvePromise({ code, output: Buffer.concat(chunks).toString('utf8') }));
    });
    expect(result.code).toBe(0);
    expect(result.output).toMatch(/\rvalidating \[#* *\] +\d+%/);
    expect(result.output).toContain('\r\x1b[K'); // cleared before the report
    expect(result.output).toMatch(/ok: log 'default' is clean/);
  });

  it('draws on a terminal and clears itself; draws nothing elsewhere', () => {
    const written: string[] = [];
    const tty = { isTTY: true, columns: 80, write: (s: string) => written.push(s) > 0 };
    let now = 0;
    const progress = createProgress(tty, 'validating', () => now);
    progress.onProgress?.(0, 1000);
    now += 10;
    progress.onProgress?.(500, 1000); // throttled: too soon after the last redraw
    now += 200;
    progress.onProgress?.(1000, 1000);
    progress.finish();
    expect(written).toHaveLength(3);
    expect(written[1]).toContain('100%');
    expect(written[2]).toBe('\r\x1b[K');

    const pipe = { isTTY: false, write: (s: string) => written.push(s) > 0 };
    expect(createProgress(pipe, 'validating').onProgress).toBeUndefined();
    expect(renderBar('x', 1, 4, 80)).toMatch(/^x \[#+ +\]  25%/);
  });
});
