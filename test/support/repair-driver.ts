// Driver of the repair integration tests (test/integration/repair.test.ts): a cluster of real
// node processes whose flags differ per node (scrub rate and interval, gone-after, segment size),
// fault injectors that damage sealed segment files in place (flip, zero, delete, bad header, a
// "lying" rewrite that stays self-consistent), and probes over the AdminService (validate,
// recovery events). Processes are stopped by pid; the root directory is removed on dispose.
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aggregateOf } from '../../src/wal/aggregate.js';
import { ENTRY_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES, decodeFrameAt, decodeTrailer, encodeEntryInto, encodeTrailer } from '../../src/wal/format.js';
import type { AdminClient, WalClient } from '../../src/rpc/index.js';
import type { RecoveryEvent__Output } from '../../src/rpc/generated/walrecovery/v1/RecoveryEvent.js';
import type { SegmentStatus__Output } from '../../src/rpc/generated/walrecovery/v1/SegmentStatus.js';
import type { ValidateMessage__Output } from '../../src/rpc/generated/walrecovery/v1/ValidateMessage.js';
import { TestNode, launchNode, payloadFor, pollUntil } from './cluster.js';
import { freePort, killAndWait } from './etcd.js';
const ENTRY_BYTES_MAX = 1024 * 1024;

export interface NodeSpec {
  readonly id: string;
  /** Extra `node` flags for this node (--scrub-interval-ms 500 ...). */
  readonly args: readonly string[];
}

/** Node processes with per-node flags; ids, ports and data dirs survive restarts. */
export class RepairCluster {
  readonly nodes: TestNode[] = [];
  private readonly specs = new Map<string, NodeSpec>();

  private constructor(
    readonly root: string,
    readonly etcd: string,
    readonly cluster: string,
  ) {}

  static async start(options: { etcd: string; cluster: string; nodes: readonly NodeSpec[] }): Promise<RepairCluster> {
    const root = await mkdtemp(join(tmpdir(), 'wal-repair-'));
    const cluster = new RepairCluster(root, options.etcd, options.cluster);
    try {
      for (const spec of options.nodes) {
        const dataDir = join(root, spec.id);
        await mkdir(dataDir, { recursive: true });
        cluster.specs.set(spec.id, spec);
        cluster.nodes.push(new TestNode(spec.id, dataDir, await freePort(), join(root, `${spec.id}.log`)));
      }
      for (const node of cluster.nodes) await cluster.launch(node);
    } catch (error) {
      await cluster.dispose();
      throw error;
    }
    return cluster;
  }

  node(id: string): TestNode {
    const found = this.nodes.find((n) => n.id === id);
    if (!found) throw new Error(`no node ${id}`);
    return found;
  }

  live(): TestNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  private async launch(node: TestNode): Promise<void> {
    const spec = this.specs.get(node.id);
    const args = ['node', '--id', node.id, '--data-dir', node.dataDir, '--listen', node.target, '--etcd', this.etcd, '--cluster', this.cluster, ...(spec?.args ?? [])];
    await launchNode(node, args);
  }

  /** kill -9 (default) or SIGTERM by pid; waits for the exit. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const node = this.node(id);
    node.closeClients();
    if (node.child) await killAndWait(node.child, signal);
  }

  async restart(id: string): Promise<void> {
    const node = this.node(id);
    if (node.alive) await this.kill(id, 'SIGTERM');
    await this.launch(node);
  }

  /** Stops every node by pid and removes the root (kept with WAL_KEEP_TEST_DIRS=1). */
  async dispose(): Promise<void> {
    for (const node of this.nodes) {
      node.closeClients();
      if (node.child) await killAndWait(node.child, 'SIGKILL');
    }
    if (process.env['WAL_KEEP_TEST_DIRS'] === '1') return;
    await rm(this.root, { recursive: true, force: true });
  }

  /** The log's segments as a live node reports them. */
  async segments(log: string, via?: TestNode): Promise<SegmentStatus__Output[]> {
    const node = via ?? this.live()[0];
    if (!node) throw new Error('no live node');
    const status = await node.adminClient().status(log);
    return status.logs.find((l) => l.log === log)?.segments ?? [];
  }

  /** Sealed segments holding entries. */
  async sealed(log: string, via?: TestNode): Promise<SegmentStatus__Output[]> {
    return (await this.segments(log, via)).filter((s) => s.state === 'SEALED' && s.index_count > 0);
  }

  /**
   * Waits until each listed sealed segment (default: all) is present and byte-identical on every
   * live member of its ensemble, with etcd's byte length; returns one copy of each.
   */
  async identicalCopies(log: string, timeoutMs: number, segmentIds?: readonly number[]): Promise<Map<number, Buffer>> {
    let last: string[] = [];
    try {
      return await pollUntil('identical sealed copies', timeoutMs, async () => {
        const result = await this.compareCopies(log, segmentIds);
        last = result.differences;
        return last.length === 0 ? result.copies : undefined;
      }, 200);
    } catch (error) {
      throw new Error(`sealed copies of ${log} still differ: ${last.join('; ')}`, { cause: error });
    }
  }

  async compareCopies(log: string, segmentIds?: readonly number[]): Promise<{ copies: Map<number, Buffer>; differences: string[] }> {
    const copies = new Map<number, Buffer>();
    const differences: string[] = [];
    for (const segment of await this.sealed(log)) {
      if (segmentIds && !segmentIds.includes(segment.segment_id)) continue;
      for (const member of segment.ensemble) {
        const node = this.nodes.find((n) => n.id === member);
        if (!node?.alive) continue;
        const bytes = await readFile(node.segmentPath(log, segment.segment_id)).catch(() => undefined);
        if (!bytes) {
          differences.push(`segment ${segment.segment_id}: no file on ${member}`);
          continue;
        }
        if (bytes.byteLength !== segment.byte_length) differences.push(`segment ${segment.segment_id}: ${bytes.byteLength} bytes on ${member}, etcd records ${segment.byte_length}`);
        const reference = copies.get(segment.segment_id);
        if (!reference) copies.set(segment.segment_id, bytes);
        else if (!reference.equals(bytes)) differences.push(`segment ${segment.segment_id}: ${member} differs`);
      }
    }
    return { copies, differences };
  }
}

// ---------------------------------------------------------------------------------------------
// Writing test data

/** Appends count payloads of payloadBytes in batches (creating the log); returns them by index. */
export async function appendEntries(client: WalClient, log: string, count: number, payloadBytes: number, batch = 32): Promise<Map<number, Buffer>> {
  const acked = new Map<number, Buffer>();
  for (let seq = 0; seq < count; seq += batch) {
    const payloads: Buffer[] = [];
    for (let i = seq; i < Math.min(count, seq + batch); i += 1) payloads.push(payloadFor(log, i + 1, payloadBytes));
    const outcome = await client.append(log, payloads, { createIfMissing: true, deadlineMs: 30_000 });
    payloads.forEach((p, i) => acked.set(outcome.firstIndex + i, p));
  }
  return acked;
}

// ---------------------------------------------------------------------------------------------
// Segment files: where each entry lies, and fault injection in place

export interface FrameSpan {
  readonly index: number;
  readonly offsetBytes: number;
  readonly byteLength: number;
  readonly timestampMs: number;
  readonly flags: number;
}

/** Every entry frame of an intact segment file, in order. */
export function framesOf(bytes: Buffer): FrameSpan[] {
  const spans: FrameSpan[] = [];
  let offset = SEGMENT_HEADER_BYTES;
  while (offset < bytes.byteLength) {
    const decoded = decodeFrameAt(bytes, offset, ENTRY_BYTES_MAX);
    if (decoded.kind !== 'entry') break;
    spans.push({ index: decoded.header.index, offsetBytes: offset, byteLength: decoded.frameByteLength, timestampMs: decoded.header.timestampMs, flags: decoded.header.flags });
    offset += decoded.frameByteLength;
  }
  return spans;
}

/** The frame of index (throws when the segment does not hold it intact). */
export function frameAt(bytes: Buffer, index: number): FrameSpan {
  const span = framesOf(bytes).find((f) => f.index === index);
  if (!span) throw new Error(`no intact frame of index ${index}`);
  return span;
}

/** Writes bytes at offset of a file in place, synced. */
export async function writeAt(path: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.byteLength, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flips one bit of the byte at offset. */
export async function flipByte(path: string, offset: number): Promise<void> {
  const bytes = await readFile(path);
  const value = bytes[offset];
  if (value === undefined) throw new Error(`offset ${offset} is past the end of ${path}`);
  await writeAt(path, offset, Buffer.from([value ^ 0x10]));
}

/** Zeroes byteLength bytes at offset (a lost sector). */
export async function zeroRange(path: string, offset: number, byteLength: number): Promise<void> {
  await writeAt(path, offset, Buffer.alloc(byteLength));
}

/** Flips a byte inside the payload of index. */
export async function flipPayloadByte(path: string, index: number): Promise<void> {
  const span = frameAt(await readFile(path), index);
  await flipByte(path, span.offsetBytes + ENTRY_HEADER_BYTES + Math.floor((span.byteLength - ENTRY_HEADER_BYTES) / 2));
}

/**
 * A lying replica: rewrites the payload of index (same length, other bytes) with a freshly
 * encoded frame (same index, timestamp and flags, so its checksums verify) and a trailer with the
 * recomputed aggregate. The file is self-consistent; only etcd's aggregate tells it is wrong.
 */
export async function lieAbout(path: string, index: number): Promise<Buffer> {
  const bytes = await readFile(path);
  const frames = framesOf(bytes);
  const span = frames.find((f) => f.index === index);
  if (!span) throw new Error(`no intact frame of index ${index}`);
  const payload = Buffer.alloc(span.byteLength - ENTRY_HEADER_BYTES, 0x4c); // 'L'
  payload.write(`lie-${index}-`, 0, 'latin1');
  encodeEntryInto(bytes, span.offsetBytes, { index, timestampMs: span.timestampMs, flags: span.flags, payload });
  const aggregate = aggregateOf(bytes.readUInt16LE(4), frames.map((f) => bytes.readBigUInt64BE(f.offsetBytes + 8)));
  const trailerOffset = bytes.byteLength - TRAILER_BYTES;
  const trailer = decodeTrailer(bytes.subarray(trailerOffset));
  if (!trailer.ok) throw new Error(`${path} has no intact trailer`);
  encodeTrailer({ ...trailer.trailer, aggregateChecksum: aggregate }).copy(bytes, trailerOffset);
  await writeFile(path, bytes, { flush: true });
  return payload;
}

// ---------------------------------------------------------------------------------------------
// AdminService probes

/** Every Validate finding (the final done message left out). */
export async function validateFindings(admin: AdminClient, log: string, node = ''): Promise<ValidateMessage__Output[]> {
  const found: ValidateMessage__Output[] = [];
  for await (const m of admin.validate(log, node, 60_000)) if (!m.done) found.push(m);
  return found;
}

/** Records WatchRecoveryEvents of one node until stopped. */
export class EventRecorder {
  readonly events: RecoveryEvent__Output[] = [];
  private readonly stream: ReturnType<AdminClient['watchEvents']>;

  constructor(admin: AdminClient, log: string) {
    this.stream = admin.watchEvents(log);
    this.stream.on('data', (e: RecoveryEvent__Output) => this.events.push(e));
    this.stream.on('error', () => undefined); // cancelled on stop
  }

  async waitFor(what: string, timeoutMs: number, match: (e: RecoveryEvent__Output) => boolean): Promise<RecoveryEvent__Output> {
    try {
      return await pollUntil(what, timeoutMs, async () => this.events.find(match), 100);
    } catch (error) {
      throw new Error(`${what}: not seen; events: ${JSON.stringify(this.events.map((e) => [e.kind, e.source, e.segment_id, e.detail]))}`, { cause: error });
    }
  }

  stop(): void {
    this.stream.cancel();
  }
}
