// The fault matrix (issue 11, after the CORDS study, FAST 2017): every file kind a node keeps,
// region by region, times every fault, injected on one node of a real 3-node cluster (real etcd,
// real node processes on 127.0.0.1) while a workload appends. For each cell: the damage is
// detected, repaired from the replicas, no acknowledged entry is lost, no wrong byte is served,
// and the other nodes are unharmed. Prints the matrix (rows: file and region, columns: fault,
// cells: outcome and time to repair) and writes it to docs/FAULTS.md.
//
// One cluster serves every cell. Two logs: "sealed" (16 KiB segments: many sealed segments, one
// per sealed-segment cell) and "open" (4 MiB segments: its segment stays open for the whole run).
// The victim is a node that is the writer of neither log (a follower of both). Detection is what
// the node does by itself (scrubber every 300 ms, reads through the victim, a restart for the
// files only read at open), never a repair ordered by the test.
import { readFile, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Appender, type TestNode, pollUntil, readAll } from '../support/cluster.js';
import { EtcdServer, sleepMs } from '../support/etcd.js';
import { RepairCluster, appendEntries, framesOf, validateFindings, writeAt } from '../support/repair-driver.js';
import { ENTRY_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES, segmentFileName } from '../../src/wal/format.js';
import { renderMatrix, type Cell, type Fault, FAULTS } from './matrix-render.js';

const SEALED_LOG = 'sealed';
const OPEN_LOG = 'open';
const SMALL_SEGMENT_BYTES = 16 * 1024;
const BIG_SEGMENT_BYTES = 4 * 1024 * 1024;
const PAYLOAD_BYTES = 200;
const PREFILL_ENTRIES = 2_400; // about 34 sealed segments of 16 KiB
const REPAIR_TIMEOUT_MS = 15_000;
const ONLY_ROWS = process.env['WAL_FAULTS_ROWS'] ? new RegExp(process.env['WAL_FAULTS_ROWS']) : undefined;
/** docs/FAULTS.md is written by a full run only. */
const WRITE_DOCS = ONLY_ROWS === undefined && process.env['WAL_FAULTS_WRITE_DOCS'] !== '0';

let etcd: EtcdServer | undefined;
let cluster: RepairCluster | undefined;
const workloads: Appender[] = [];
/** Set once the workload stopped (before the deferred cells). */
let workloadsStopped = false;
const prefilled = new Map<string, Map<number, Buffer>>();
let victim: TestNode;
let healthy: TestNode[] = [];
/** Copies of the victim's files taken early, for "replaced by an older copy of itself". */
const older: { sealedOpenCopy: { segmentId: number; bytes: Buffer } | undefined; catalog: Buffer; epoch: Buffer } = { sealedOpenCopy: undefined, catalog: Buffer.alloc(0), epoch: Buffer.alloc(0) };
const cells: Cell[] = [];
/** Sealed segments already used by a cell: each cell damages a segment of its own. */
const usedSegments = new Set<number>();

function the<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`no ${what}`);
  return value;
}

const logDir = (node: TestNode, log: string): string => join(node.dataDir, 'logs', log);

// ---------------------------------------------------------------------------------------------
// Set-up

beforeAll(async () => {
  etcd = await EtcdServer.start();
  // The scrub throttle is off: under this workload on a loaded 2-core machine it may slow
  // scrubbing to 1/64 of its rate (docs/SCRUBBING.md, "Yielding to appends"), and a pass over the
  // victim's ~8 MB (segments and backups) then takes ~30 s: the backup cells, found by scrubbing
  // alone, failed CI that way (15 s each). Time to detect would measure the machine's load, not
  // detection; the throttle has its own tests (scrub-throttle, scrub-pace) and bench row.
  const common = ['--scrub-interval-ms', '300', '--backups', '1', '--no-scrub-throttle'];
  cluster = await RepairCluster.start({
    etcd: etcd.endpoint,
    cluster: 'matrix',
    nodes: [
      { id: 'n1', args: ['--segment-bytes', String(SMALL_SEGMENT_BYTES), ...common] },
      { id: 'n2', args: ['--segment-bytes', String(BIG_SEGMENT_BYTES), ...common] },
      { id: 'n3', args: ['--segment-bytes', String(BIG_SEGMENT_BYTES), ...common] },
    ],
  });
  const c = cluster;
  // The log's segment size is the creating node's: "sealed" through n1, "open" through n2.
  prefilled.set(SEALED_LOG, await appendEntries(c.node('n1').walClient(), SEALED_LOG, PREFILL_ENTRIES, PAYLOAD_BYTES, 64));
  prefilled.set(OPEN_LOG, await appendEntries(c.node('n2').walClient(), OPEN_LOG, 200, PAYLOAD_BYTES, 20));
  // An older EPOCH: copied before a writer change raises every member's fence.
  const sealedWriter = await writerOf(SEALED_LOG);
  const before = new Map<string, Buffer>();
  for (const node of c.nodes) before.set(node.id, await readFile(join(logDir(node, SEALED_LOG), 'EPOCH')));
  await c.kill(sealedWriter.id);
  await pollUntil('a new writer of the sealed log', 30_000, async () => ((await writerOf(SEALED_LOG).catch(() => undefined))?.id !== sealedWriter.id ? true : undefined));
  await c.restart(sealedWriter.id);
  const writers = new Set([(await writerOf(SEALED_LOG)).id, (await writerOf(OPEN_LOG)).id]);
  victim = the(c.nodes.find((n) => !writers.has(n.id)), 'node that writes neither log');
  healthy = c.nodes.filter((n) => n !== victim);
  older.epoch = the(before.get(victim.id), 'older EPOCH');
  // Appends on the new writer of "sealed" (so its epoch is in use) before the older copies are taken.
  // (A writer change seals the open segment of each log it wrote: new ones open with these appends.)
  await appendEntries(c.node('n1').walClient(), SEALED_LOG, 60, PAYLOAD_BYTES, 20).then((m) => mergeInto(SEALED_LOG, m));
  await appendEntries(c.node('n2').walClient(), OPEN_LOG, 100, PAYLOAD_BYTES, 20).then((m) => mergeInto(OPEN_LOG, m));
  older.catalog = await readFile(join(logDir(victim, SEALED_LOG), 'CATALOG'));
  const sealedOpen = await openSegmentOf(SEALED_LOG);
  older.sealedOpenCopy = { segmentId: sealedOpen, bytes: await readFile(victim.segmentPath(SEALED_LOG, sealedOpen)) };
  usedSegments.add(sealedOpen);
  // The workload: appends keep arriving on both logs for the whole matrix.
  for (const [log, via] of [[SEALED_LOG, 'n1'], [OPEN_LOG, 'n2']] as const) {
    workloads.push(new Appender(c.node(via).walClient(), { log, tag: `w${log}`, entries: Number.MAX_SAFE_INTEGER, concurrency: 1, batch: 2, payloadBytes: PAYLOAD_BYTES }).start());
  }
  await sleepMs(500);
}, 240_000);

afterAll(async () => {
  for (const w of workloads) await w.stop().catch(() => undefined);
  await cluster?.dispose();
  await etcd?.dispose();
}, 60_000);

function mergeInto(log: string, entries: Map<number, Buffer>): void {
  const map = prefilled.get(log) ?? new Map<number, Buffer>();
  for (const [i, p] of entries) map.set(i, p);
  prefilled.set(log, map);
}

async function writerOf(log: string): Promise<TestNode> {
  const c = the(cluster, 'cluster');
  return pollUntil(`the writer of ${log}`, 30_000, async () => {
    for (const node of c.live()) {
      const status = await node.adminClient().status(log).catch(() => undefined);
      const writer = status?.logs.find((l) => l.log === log)?.writer;
      const found = c.nodes.find((n) => n.id === writer);
      if (found?.alive) return found;
    }
    return undefined;
  });
}

async function openSegmentOf(log: string): Promise<number> {
  const segments = await the(cluster, 'cluster').segments(log, healthy[0]);
  return the(segments.filter((s) => s.state === 'OPEN').at(-1), `open segment of ${log}`).segment_id;
}


// ---------------------------------------------------------------------------------------------
// Faults

/** Applies fault to path at offset (region faults), or to the whole file. Returns false when it cannot. */
async function inject(fault: Fault, path: string, offset: number, olderCopy?: Buffer): Promise<void> {
  const bytes = await readFile(path);
  switch (fault) {
    case 'bit flip':
      await writeAt(path, offset, Buffer.from([(bytes[offset] ?? 0) ^ 0x10]));
      return;
    case 'zeroed 4 KiB block': {
      const start = Math.floor(offset / 4096) * 4096;
      await writeAt(path, start, Buffer.alloc(Math.min(4096, bytes.byteLength - start)));
      return;
    }
    case 'random 4 KiB block': {
      const start = Math.floor(offset / 4096) * 4096;
      const junk = Buffer.alloc(Math.min(4096, bytes.byteLength - start));
      for (let i = 0; i < junk.byteLength; i += 1) junk[i] = (i * 7919 + 13) & 0xff;
      await writeAt(path, start, junk);
      return;
    }
    case 'truncate to half':
      await truncate(path, Math.floor(bytes.byteLength / 2));
      return;
    case 'delete':
      await unlink(path);
      return;
    case 'older copy':
      // Written over the file in place, as a restore tool copying an old file would.
      await writeFile(path, the(olderCopy, 'older copy'));
      return;
    case 'EIO on read':
      throw new Error('EIO cannot be injected on real files here');
  }
}

// ---------------------------------------------------------------------------------------------
// Rows

type Outcome = { ok: true; how: string } | { ok: false; why: string };

interface Row {
  readonly name: string;
  readonly faults: readonly Fault[];
  /** Injects fault and waits for the repair; the outcome. */
  readonly run: (fault: Fault) => Promise<Outcome>;
  /** Faults run after the final checks (a known gap that leaves the node's copy of a log down). */
  readonly last?: readonly Fault[];
  /** Faults not run in this row (why: NOT_RUN_WHY). */
  readonly notRun?: readonly Fault[];
}

const REGION_FAULTS: readonly Fault[] = ['bit flip', 'zeroed 4 KiB block', 'random 4 KiB block', 'EIO on read'];
const FILE_FAULTS: readonly Fault[] = ['truncate to half', 'delete', 'older copy', 'EIO on read'];

/**
 * The open segment of log once its ensemble names the victim and it holds a few entries there.
 * The cells run after the workload stopped (the deferred ones) append a few entries themselves
 * while waiting: after a kill the open segment leaves the victim out, and only a roll to the next
 * segment (appends) names it again.
 */
async function openSegmentHolding(log: string): Promise<number> {
  const c = the(cluster, 'cluster');
  return pollUntil(`an open segment of ${log} held by ${victim.id}`, 20_000, async () => {
    const open = (await c.segments(log, healthy[0])).filter((s) => s.state === 'OPEN').at(-1);
    const bytes = open?.ensemble.includes(victim.id) ? await readFile(victim.segmentPath(log, open.segment_id)).catch(() => undefined) : undefined;
    if (open && bytes && framesOf(bytes).length >= 8) return open.segment_id;
    if (workloadsStopped) await appendEntries(c.node('n1').walClient(), log, 10, PAYLOAD_BYTES, 10).then((m) => mergeInto(log, m));
    return undefined;
  }, 100);
}

/** A sealed segment of the sealed log that no cell used yet, identical on every member. */
async function freshSealedSegment(): Promise<{ segmentId: number; original: Buffer; firstIndex: number; lastIndex: number }> {
  const c = the(cluster, 'cluster');
  const sealed = (await c.sealed(SEALED_LOG, healthy[0])).filter((s) => !usedSegments.has(s.segment_id) && s.ensemble.includes(victim.id));
  const segment = the(sealed[Math.floor(sealed.length / 2)], 'unused sealed segment');
  usedSegments.add(segment.segment_id);
  const copies = await c.identicalCopies(SEALED_LOG, 20_000, [segment.segment_id]);
  return { segmentId: segment.segment_id, original: the(copies.get(segment.segment_id), 'copy'), firstIndex: segment.first_index, lastIndex: segment.last_index };
}

/** Reads one entry through the victim (the read path detects local damage), ignoring the answer. */
async function touch(log: string, index: number): Promise<void> {
  try {
    for await (const _ of victim.walClient().read(log, index, index, { deadlineMs: 5_000 })) break;
  } catch {
    // The read may fail over or fail; only the repair that follows is measured.
  }
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = REPAIR_TIMEOUT_MS): Promise<boolean> {
  return pollUntil(what, timeoutMs, async () => ((await probe()) ? true : undefined), 100).then(
    () => true,
    () => false,
  );
}

function sealedRow(name: string, faults: readonly Fault[], offsetOf: (bytes: Buffer) => number): Row {
  return {
    name,
    faults,
    run: async (fault) => {
      const segment = await freshSealedSegment();
      const path = victim.segmentPath(SEALED_LOG, segment.segmentId);
      const olderCopy = fault === 'older copy' ? the(older.sealedOpenCopy, 'older copy of a sealed segment') : undefined;
      if (olderCopy) {
        // The older copy is of a segment taken while it was open: that segment is the one damaged.
        const copies = await the(cluster, 'cluster').identicalCopies(SEALED_LOG, 20_000, [olderCopy.segmentId]);
        return sealedCell(olderCopy.segmentId, the(copies.get(olderCopy.segmentId), 'copy'), fault, olderCopy.bytes, 0);
      }
      return sealedCell(segment.segmentId, segment.original, fault, undefined, offsetOf(segment.original), path, segment.firstIndex);
    },
  };
}

async function sealedCell(segmentId: number, original: Buffer, fault: Fault, olderBytes: Buffer | undefined, offset: number, path = victim.segmentPath(SEALED_LOG, segmentId), firstIndex = 0): Promise<Outcome> {
  await inject(fault, path, offset, olderBytes);
  const frames = framesOf(original);
  const index = firstIndex || (frames[0]?.index ?? 1);
  void touch(SEALED_LOG, index + Math.floor(frames.length / 2));
  const ok = await waitFor(`segment ${segmentId} repaired on ${victim.id}`, async () => (await readFile(path).catch(() => Buffer.alloc(0))).equals(original));
  return ok ? { ok: true, how: 'scrub/read' } : { ok: false, why: 'the copy was not repaired' };
}

/**
 * The open segment's acknowledged entries damaged; with killed, the node is killed (-9) right
 * after the damage and started again, so the repair is its open's, not the running node's.
 */
function openRow(killed: boolean): Row {
  return {
    name: killed ? 'open segment, node killed before its repair' : 'open segment (acknowledged entries)',
    faults: killed ? ['bit flip', 'zeroed 4 KiB block'] : [...REGION_FAULTS.filter((f) => f !== 'EIO on read'), ...FILE_FAULTS],
    ...(killed ? { last: ['zeroed 4 KiB block'] as const, notRun: ['random 4 KiB block', 'truncate to half', 'delete', 'older copy'] as const } : {}),
    run: async (fault) => {
      // A kill makes the writer seal and leave the node out of the next segment's ensemble: the
      // killed cells use the log of small segments, where one naming the node again opens soon.
      const log = killed ? SEALED_LOG : OPEN_LOG;
      const segmentId = await openSegmentHolding(log);
      usedSegments.add(segmentId);
      const path = victim.segmentPath(log, segmentId);
      const reference = healthy[0] as TestNode;
      // An older copy of this very file: taken now, put back once the workload added to it.
      const olderBytes = fault === 'older copy' ? await readFile(path) : Buffer.alloc(0);
      if (fault === 'older copy') await waitFor('the open segment to grow', async () => (await readFile(path)).byteLength > olderBytes.byteLength + 2048, 10_000);
      const before = await readFile(path);
      const frames = framesOf(before);
      const middle = the(frames[Math.floor(frames.length / 2)], 'frame in the open segment');
      await inject(fault, path, middle.offsetBytes + ENTRY_HEADER_BYTES + 20, olderBytes);
      if (killed) {
        await the(cluster, 'cluster').kill(victim.id);
        await the(cluster, 'cluster').restart(victim.id);
      }
      const damagedIndex = fault === 'older copy' ? (framesOf(olderBytes).at(-1)?.index ?? 0) + 1 : fault === 'truncate to half' || fault === 'delete' ? (frames.at(-1)?.index ?? 1) : middle.index;
      void touch(log, damagedIndex);
      // A deferred cell runs after the workload stopped: appends go on here, as the workload's
      // would (the writer seals the segment at its roll; docs/RECOVERY.md, known limit 20).
      let appending = killed && workloadsStopped;
      const appends = (async () => {
        while (appending) {
          await appendEntries(the(cluster, 'cluster').node('n1').walClient(), log, 4, PAYLOAD_BYTES, 4).then((m) => mergeInto(log, m), () => undefined);
          await sleepMs(100);
        }
      })();
      const ok = await waitFor(`open segment repaired on ${victim.id}`, async () => {
        const mine = await readFile(path).catch(() => Buffer.alloc(0));
        const theirs = await readFile(reference.segmentPath(log, segmentId));
        return mine.byteLength >= before.byteLength && mine.subarray(0, before.byteLength).equals(theirs.subarray(0, before.byteLength));
      }).finally(() => {
        appending = false;
      });
      await appends;
      if (ok) return { ok: true, how: killed ? 'restart' : 'read/scrub' };
      return { ok: false, why: killed ? 'the copy was not repaired after the restart' : 'the open copy was not repaired' };
    },
  };
}

/** Files read only at open: the victim is killed (-9) right after the damage and started again. */
function restartRow(name: string, file: 'CATALOG' | 'EPOCH', faults: readonly Fault[], check: () => Promise<boolean>): Row {
  return {
    name,
    faults,
    run: async (fault) => {
      const c = the(cluster, 'cluster');
      const path = join(logDir(victim, SEALED_LOG), file);
      const size = (await readFile(path)).byteLength;
      await inject(fault, path, file === 'EPOCH' ? 1 : Math.min(size - 1, 200), file === 'EPOCH' ? older.epoch : older.catalog);
      await c.kill(victim.id);
      await c.restart(victim.id);
      const ok = await waitFor(`${file} repaired on ${victim.id}`, check, 30_000);
      return ok ? { ok: true, how: 'restart' } : { ok: false, why: `${file} was not repaired at restart` };
    },
  };
}

async function catalogRepaired(): Promise<boolean> {
  const findings = await validateFindings(victim.adminClient(), SEALED_LOG, victim.id).catch(() => undefined);
  return findings !== undefined && findings.length === 0;
}

/** The victim refuses a Fence below the writer's epoch (it had been fenced at that epoch). */
async function epochRepaired(): Promise<boolean> {
  const c = the(cluster, 'cluster');
  const status = await c.segments(SEALED_LOG, healthy[0]).catch(() => undefined);
  const epoch = await writerEpochOf(SEALED_LOG);
  if (!status || epoch < 2) return false;
  const segmentId = status.at(-1)?.segment_id ?? 1;
  try {
    await victim.peerClient().fence(SEALED_LOG, segmentId, epoch - 1);
    throw new Error(`${victim.id} accepted Fence(${epoch - 1}) after it had been fenced at ${epoch}`);
  } catch (error) {
    if ((error as { code?: number }).code === 10) return true; // ABORTED
    throw error;
  }
}

async function writerEpochOf(log: string): Promise<number> {
  const status = await (healthy[0] as TestNode).adminClient().status(log);
  return the(status.logs.find((l) => l.log === log), 'log status').writer_epoch;
}

/** What the node's scrubber was doing, for a cell that failed on scrubbing alone. */
async function scrubState(node: TestNode): Promise<string> {
  const scrub = await node.adminClient().status('').then((s) => s.scrub).catch(() => undefined);
  if (scrub === undefined || scrub === null) return 'scrub status unavailable';
  return `scrub: throttle share ${scrub.throttle_share.toFixed(3)}, deficit ${scrub.deficit_seconds.toFixed(1)} s, rate x${scrub.rate_multiplier}`;
}

/** The node's last log lines that name a segment of the sealed log (why a cell failed). */
async function logLinesAbout(node: TestNode, segmentId: number, max: number): Promise<string> {
  const text = await readFile(node.logPath, 'utf8').catch((error: unknown) => `(no log: ${String(error)})`);
  const lines = text.split('\n').filter((line) => line.includes(`"segment":${segmentId}`) || line.includes('"msg":"scrub'));
  return lines.slice(-max).join('\n');
}

function backupRow(): Row {
  return {
    name: 'backup copy of a sealed segment',
    faults: [...REGION_FAULTS, ...FILE_FAULTS],
    run: async (fault) => {
      const segment = await freshSealedSegment();
      const path = join(logDir(victim, SEALED_LOG), 'backups', '1', segmentFileName(segment.segmentId));
      await waitFor('backup written', async () => (await readFile(path).catch(() => Buffer.alloc(0))).equals(segment.original), 10_000);
      const olderBytes = segment.original.subarray(0, segment.original.byteLength - TRAILER_BYTES - 400);
      await inject(fault, path, SEGMENT_HEADER_BYTES + 300, olderBytes);
      const ok = await waitFor(`backup of ${segment.segmentId} repaired on ${victim.id}`, async () => (await readFile(path).catch(() => Buffer.alloc(0))).equals(segment.original));
      if (ok) return { ok: true, how: 'scrub' };
      console.log(`victim ${victim.id} log lines on segment ${segment.segmentId} (last 20):\n${await logLinesAbout(victim, segment.segmentId, 20)}`);
      return { ok: false, why: `the backup copy was not repaired (${await scrubState(victim)})` };
    },
  };
}

const ROWS: readonly Row[] = [
  sealedRow('sealed segment: header', REGION_FAULTS, () => 17),
  sealedRow('sealed segment: entry header', REGION_FAULTS, (bytes) => (framesOf(bytes)[5]?.offsetBytes ?? SEGMENT_HEADER_BYTES) + 20),
  sealedRow('sealed segment: payload', REGION_FAULTS, (bytes) => (framesOf(bytes)[8]?.offsetBytes ?? SEGMENT_HEADER_BYTES) + ENTRY_HEADER_BYTES + 50),
  sealedRow('sealed segment: trailer', REGION_FAULTS, (bytes) => bytes.byteLength - TRAILER_BYTES + 41),
  sealedRow('sealed segment: whole file', FILE_FAULTS, () => 0),
  openRow(false),
  openRow(true),
  restartRow('CATALOG', 'CATALOG', [...REGION_FAULTS, ...FILE_FAULTS], catalogRepaired),
  restartRow('EPOCH', 'EPOCH', ['bit flip', 'zeroed 4 KiB block', 'random 4 KiB block', ...FILE_FAULTS], epochRepaired),
  backupRow(),
];

/** Cells that fail today (each one a known gap, named in docs/FAULTS.md and RECOVERY.md). */
const KNOWN_GAPS: readonly RegExp[] = [/^open segment, node killed before its repair x zeroed 4 KiB block$/];

/** Why some cells of the killed row are not run. */
const NOT_RUN_WHY =
  'the zeroed-block cell of this row can leave the log down on the node (a known gap), so it runs last, after the final checks; the faults not run here are the ones whose damage reaches the same path (a lost header or a shortened file found at open)';

/** Said under the table. */
const NOTES = [
  '**Known gap** (docs/RECOVERY.md, known limit 20): an open segment whose first 4 KiB (header and first entries) are zeroed on a node that is then killed before its online repair, when no catalog record describes the segment yet, is repaired at the node\'s open only once etcd\'s record of the segment says SEALED (the copy is then rebuilt to that record from the other members); while the record is OPEN no one knows where this copy ended, so the log does not open on that node (it tries again every few seconds). The writer seals the segment at its roll, so the cell appends while it waits, as the workload would (it runs after the workload stopped); a log that gets no appends keeps that copy down until a writer change. The other members serve the log; nothing acknowledged is lost. The cell is allowed to fail.',
  'Command: `npm run test:faults` (about 2 to 3 minutes on 2 cores; `WAL_FAULTS_ROWS=<regex>` runs some rows only and leaves this page alone).',
];

/** Why EIO on read is not injected on real files (the table says so in its cells). */
const EIO_WHY =
  'needs a block device that fails reads (dm-error / dm-flakey, root and a loop device) or a FUSE file system; neither is available to an unprivileged test on a shared CI machine. The simulator injects EIO through its Disk (test/regression/disk-faults.test.ts)';

// ---------------------------------------------------------------------------------------------

describe('fault matrix: one node of three, workload running', () => {
  it('every injectable cell is detected and repaired from the replicas, with nothing lost and no wrong byte served', async () => {
    const runCell = async (row: Row, fault: Fault): Promise<void> => {
      const started = Date.now();
      const outcome = await row.run(fault).catch((error: unknown): Outcome => ({ ok: false, why: error instanceof Error ? error.message : String(error) }));
      cells.push({ row: row.name, fault, outcome: outcome.ok ? 'repaired' : 'FAILED', ms: Date.now() - started, detail: outcome.ok ? outcome.how : outcome.why });
      console.log(`${row.name} x ${fault}: ${outcome.ok ? 'repaired' : 'FAILED'} in ${Date.now() - started} ms (${outcome.ok ? outcome.how : outcome.why})`);
    };
    const deferred: Array<{ row: Row; fault: Fault }> = [];
    for (const row of ROWS) {
      if (ONLY_ROWS && !ONLY_ROWS.test(row.name)) continue;
      for (const fault of FAULTS) {
        if (fault === 'EIO on read') cells.push({ row: row.name, fault, outcome: 'not injectable', ms: 0, detail: EIO_WHY });
        else if (row.notRun?.includes(fault)) cells.push({ row: row.name, fault, outcome: 'not run', ms: 0, detail: NOT_RUN_WHY });
        else if (!row.faults.includes(fault)) cells.push({ row: row.name, fault, outcome: 'n/a', ms: 0, detail: 'the fault has no meaning for this region (file-level faults have their own row)' });
        else if (row.last?.includes(fault)) deferred.push({ row, fault });
        else await runCell(row, fault);
      }
    }
    for (const w of workloads) await w.stop();
    workloadsStopped = true;
    console.log(renderMatrix(cells, ROWS.map((r) => r.name), NOTES).text);
    await checkNothingLost();
    // Cells that leave the node's log down (known gaps) run once everything else was checked.
    for (const { row, fault } of deferred) await runCell(row, fault);
    const table = renderMatrix(cells, ROWS.map((r) => r.name), NOTES);
    console.log(table.text);
    if (WRITE_DOCS) await writeFile(join(import.meta.dirname, '../../docs/FAULTS.md'), table.markdown);
    const failed = cells.filter((c) => c.outcome === 'FAILED').map((c) => `${c.row} x ${c.fault}`);
    // Only a known gap may fail (it is listed in docs/FAULTS.md and RECOVERY.md; it passes in
    // some runs, depending on whether the node's catalog already describes the damaged segment).
    expect(failed.filter((f) => !KNOWN_GAPS.some((g) => g.test(f)))).toEqual([]);
  }, 600_000);
});

/** Every acknowledged entry of both logs reads back from every node; sealed copies agree. */
async function checkNothingLost(): Promise<void> {
  const c = the(cluster, 'cluster');
  for (const [i, log] of [SEALED_LOG, OPEN_LOG].entries()) {
    const acked = new Map(prefilled.get(log));
    for (const [index, payload] of the(workloads[i], 'workload').acked) acked.set(index, payload);
    for (const node of c.nodes) {
      const read = await readAll(node.walClient(), log);
      expect(read.problems, `${log} from ${node.id}`).toEqual([]);
      let wrong = 0;
      for (const [index, payload] of acked) if (!read.payloads[index - 1]?.equals(payload)) wrong += 1;
      expect(wrong, `acknowledged entries of ${log} missing or different on ${node.id}`).toBe(0);
    }
    const { differences } = await c.compareCopies(log);
    expect(differences, `sealed copies of ${log}`).toEqual([]);
  }
  // The other nodes are unharmed: nothing of theirs was found damaged or repaired.
  for (const node of healthy) {
    const metrics = await node.adminClient().recoveryMetrics();
    expect(metrics.corrupted_segments, `${node.id} found no damage of its own`).toBe(0);
  }
}

