// Catch-up: a node brings its copy of each sealed segment of a log in line with what etcd says
// the segment must contain, by fetching the entries it lacks from the other members of the
// segment's ensemble and sealing it where the writer sealed it. This is how a node that was down,
// slow or cut off rejoins, and how a member dropped from an ensemble finishes its copy.
//
// Fault model: peers may be down or serve bad bytes (every frame is verified by the store on
// arrival, and a sealed copy must end with the recorded aggregate checksum); etcd may be briefly
// unreachable (the pass fails and runs again later). A copy that disagrees with etcd is left as
// it is and reported: replacing it is the repair path's job, never catch-up's.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Disk } from '../io/index.js';
import { type WalStore, checksumHex } from '../wal/index.js';
import type { PeerResolver, SegmentDirectory } from './api.js';
import { ReplicationError } from './errors.js';
import { type SegmentMeta, expectationOfMeta } from './metadata.js';

export interface CatchUpContext {
  readonly log: string;
  readonly self: string;
  readonly store: WalStore;
  readonly directory: SegmentDirectory;
  readonly peers: PeerResolver;
  readonly logger: Logger;
  /** Copies a member's whole sealed segment file to path (PeerService.FetchSegment). */
  readonly fetchFile: (node: string, segmentId: number, path: string) => Promise<void>;
  /** A directory on the store's file system for copies in flight. */
  readonly tempDir: string;
  /** The disk tempDir is on (the store's). */
  readonly disk: Disk;
}

export interface CatchUpResult {
  readonly segmentsSealed: number;
  readonly entriesFetched: number;
  /** Sealed segments whose local copy disagrees with etcd (left for repair). */
  readonly mismatched: readonly number[];
  /** Segments this node should hold but cannot fetch yet. */
  readonly behind: readonly number[];
}

export const CATCH_UP_FETCH_BYTES_MAX = 4 * 1024 * 1024;

export async function catchUpLog(ctx: CatchUpContext): Promise<CatchUpResult> {
  const segments = await ctx.directory.list(ctx.log);
  let segmentsSealed = 0;
  let entriesFetched = 0;
  const mismatched: number[] = [];
  const behind: number[] = [];
  for (const { meta } of segments) {
    if (meta.state !== 'SEALED') continue;
    const member = meta.ensemble.includes(ctx.self);
    const local = ctx.store.segmentRecord(meta.segmentId);
    if (local?.state === 'sealed') {
      if (member && (local.lastIndex !== meta.lastIndex || checksumHex(local.aggregateChecksum) !== meta.aggregate)) mismatched.push(meta.segmentId);
      continue;
    }
    try {
      if (local) {
        // A member dropped from the ensemble while it held the segment open (no replica of record)
        // fetches what it lacks and seals where the record says too, like a member, so that the
        // segments after it can follow. Sealing its copy at its own end instead left a copy sealed
        // short of acknowledged entries: after etcd was restored to a snapshot naming this node a
        // member of the OPEN segment, recovery took that point for the lowest seal point and cut
        // the copies of record to it.
        entriesFetched += await fetchInto(ctx, meta, local.lastIndex + 1);
        const sealed = await ctx.store.sealSegment(meta.segmentId, meta.lastIndex);
        segmentsSealed += 1;
        if (checksumHex(sealed.aggregateChecksum) !== meta.aggregate) {
          mismatched.push(meta.segmentId);
          ctx.logger.error({ log: ctx.log, segment: meta.segmentId, expected: meta.aggregate, actual: checksumHex(sealed.aggregateChecksum) }, 'caught-up segment disagrees with its recorded aggregate checksum');
        } else {
          ctx.logger.info({ log: ctx.log, segment: meta.segmentId, lastIndex: meta.lastIndex }, 'caught up and sealed segment');
        }
        continue;
      }
      if (!member || meta.lastIndex < meta.firstIndex) continue; // not ours, or empty
      await installWhole(ctx, meta);
      segmentsSealed += 1;
      entriesFetched += meta.lastIndex - meta.firstIndex + 1;
      ctx.logger.info({ log: ctx.log, segment: meta.segmentId, lastIndex: meta.lastIndex }, 'copied a sealed segment this node is a member of');
    } catch (error) {
      ctx.logger.warn({ log: ctx.log, segment: meta.segmentId, err: error }, 'failed to catch up on segment; will retry');
      behind.push(meta.segmentId);
    }
  }
  return { segmentsSealed, entriesFetched, mismatched, behind };
}

/** Copies a whole sealed segment file from another member, verified against its record. */
async function installWhole(ctx: CatchUpContext, meta: SegmentMeta): Promise<void> {
  const expected = expectationOfMeta(meta);
  let lastError: unknown = new Error('no other member to copy from');
  for (const node of meta.ensemble.filter((n) => n !== ctx.self)) {
    const dir = await ctx.disk.mkdtemp(join(ctx.tempDir, 'install-'));
    try {
      const path = join(dir, 'segment.wal');
      await ctx.fetchFile(node, meta.segmentId, path);
      await ctx.store.installSealedSegment(meta.segmentId, path, expected);
      return;
    } catch (error) {
      lastError = error;
    } finally {
      await ctx.disk.remove(dir);
    }
  }
  throw lastError;
}

/**
 * Consecutive rounds (every member not skipped asked once) in which no member advanced the local
 * copy, before a pass gives up on the segment (it is left behind; the next pass retries): a
 * round in which every member failed once (one read timing out) is tried once more.
 */
export const FETCH_ROUNDS_WITHOUT_PROGRESS_MAX = 2;

/**
 * Fetches entries from..meta.lastIndex from the other members and appends them locally.
 *
 * Progress is what the local copy gained (the append's lastIndex moved past next), never that a
 * member answered: a member serving frames below next (a stale or misbehaving copy, or a reply
 * to an older request) is accepted by the store as a retry and adds nothing. Such a member is
 * skipped for the rest of the pass; rounds without progress are bounded, so the loop always ends.
 */
async function fetchInto(ctx: CatchUpContext, meta: SegmentMeta, from: number): Promise<number> {
  const start = { segmentId: meta.segmentId, firstIndex: meta.firstIndex, createdMs: meta.createdMs };
  let next = from;
  let fetched = 0;
  let roundsWithoutProgress = 0;
  const others = meta.ensemble.filter((n) => n !== ctx.self);
  const skipped = new Set<string>();
  while (next <= meta.lastIndex) {
    let progressed = false;
    for (const node of others) {
      if (skipped.has(node)) continue;
      const peer = ctx.peers(node);
      if (!peer) continue;
      try {
        const { frames } = await peer.readFrames(ctx.log, meta.segmentId, next, meta.lastIndex, CATCH_UP_FETCH_BYTES_MAX);
        if (frames.length === 0) continue;
        const result = await ctx.store.appendFrames(start, frames);
        if (result.lastIndex < next) {
          skipped.add(node);
          ctx.logger.warn({ log: ctx.log, segment: meta.segmentId, peer: node, entryIndex: next }, 'failed to fetch from a member: it served no frame at or after the next index; skipping it for this pass');
          continue;
        }
        fetched += result.lastIndex - next + 1;
        next = result.lastIndex + 1;
        progressed = true;
        break;
      } catch (error) {
        ctx.logger.debug({ log: ctx.log, segment: meta.segmentId, peer: node, err: error }, 'failed to fetch from a member; trying the next');
      }
    }
    roundsWithoutProgress = progressed ? 0 : roundsWithoutProgress + 1;
    if (roundsWithoutProgress >= FETCH_ROUNDS_WITHOUT_PROGRESS_MAX || others.every((n) => skipped.has(n))) {
      throw new ReplicationError(`no member serves entries from ${next} of segment ${meta.segmentId}`);
    }
  }
  return fetched;
}
