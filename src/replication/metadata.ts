// The records etcd holds for each log and each of its segments. Values are JSON, validated when
// read (etcd is trusted for integrity, but a malformed record is refused, never half-used).

import { MalformedRecordError } from './errors.js';

export type SegmentState = 'OPEN' | 'RECOVERING' | 'SEALED';

export interface LogMeta {
  readonly log: string;
  readonly replicationFactor: number;
  readonly ackQuorum: number;
  readonly segmentBytesMax: number;
  readonly createdMs: number;
}

export interface SegmentMeta {
  readonly log: string;
  readonly segmentId: number;
  readonly ensemble: readonly string[];
  readonly ackQuorum: number;
  readonly state: SegmentState;
  readonly writerEpoch: number;
  readonly firstIndex: number;
  /**
   * firstIndex - 1 while nothing is known committed; final once SEALED. An OPEN record re-derived
   * after etcd was restored carries the highest index its holders held: a recovery's answers must
   * reach it (or a sealed copy) before it seals.
   */
  readonly lastIndex: number;
  readonly indexCount: number;
  readonly byteLength: number;
  /** 16 hex digits once SEALED, '' before. */
  readonly aggregate: string;
  readonly createdMs: number;
  /**
   * Members the coordinator replaced in the ensemble (gone at the time). They may come back
   * holding their copy: repair still asks them, and an entry they may hold is never given up.
   */
  readonly formerMembers?: readonly string[];
  /**
   * Live nodes a recovery added while the record is RECOVERING because too few members answered
   * to seal (docs/CLUSTER.md, writer failover rule 4). Named before they get a byte, so the record
   * names every node that may hold a copy, but kept apart from the ensemble: they never held an
   * entry a writer acknowledged, so fence quorums are counted over the ensemble alone. Their sealed
   * copies count toward the ack quorum that may say SEALED; then the record drops this field
   * (joiners that sealed join the ensemble, the others become former members).
   */
  readonly joiners?: readonly string[];
}

function int(raw: Record<string, unknown>, field: string, min = 0): number {
  const value = raw[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) throw new MalformedRecordError(`field ${field} is not an integer >= ${min}`);
  return value;
}

function record(raw: unknown): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null) throw new MalformedRecordError('not an object');
  return raw as Record<string, unknown>;
}

export function parseLogMeta(raw: unknown): LogMeta {
  const r = record(raw);
  if (typeof r['log'] !== 'string') throw new MalformedRecordError('field log is not a string');
  const meta = {
    log: r['log'],
    replicationFactor: int(r, 'replicationFactor', 1),
    ackQuorum: int(r, 'ackQuorum', 1),
    segmentBytesMax: int(r, 'segmentBytesMax', 1),
    createdMs: int(r, 'createdMs'),
  };
  if (meta.ackQuorum > meta.replicationFactor) throw new MalformedRecordError('ackQuorum exceeds replicationFactor');
  return meta;
}

export function parseSegmentMeta(raw: unknown): SegmentMeta {
  const r = record(raw);
  const state = r['state'];
  if (state !== 'OPEN' && state !== 'RECOVERING' && state !== 'SEALED') throw new MalformedRecordError('bad state');
  const ensemble = r['ensemble'];
  if (!Array.isArray(ensemble) || ensemble.some((n) => typeof n !== 'string')) throw new MalformedRecordError('bad ensemble');
  if (typeof r['log'] !== 'string' || typeof r['aggregate'] !== 'string') throw new MalformedRecordError('bad log or aggregate');
  return {
    log: r['log'],
    segmentId: int(r, 'segmentId', 1),
    ensemble: ensemble as string[],
    ackQuorum: int(r, 'ackQuorum', 1),
    state,
    writerEpoch: int(r, 'writerEpoch'),
    firstIndex: int(r, 'firstIndex', 1),
    lastIndex: int(r, 'lastIndex'),
    indexCount: int(r, 'indexCount'),
    byteLength: int(r, 'byteLength'),
    aggregate: r['aggregate'],
    createdMs: int(r, 'createdMs'),
    ...nodeListOf(r, 'formerMembers'),
    ...nodeListOf(r, 'joiners'),
  };
}

/** An optional list of node ids, as { field: list } to spread into a record, or {} when absent. */
function nodeListOf<K extends 'formerMembers' | 'joiners'>(r: Record<string, unknown>, field: K): Partial<Record<K, readonly string[]>> {
  const raw = r[field];
  if (raw === undefined) return {};
  if (!Array.isArray(raw) || raw.some((n) => typeof n !== 'string')) throw new MalformedRecordError(`bad ${field}`);
  const list: Partial<Record<K, readonly string[]>> = {};
  list[field] = raw as string[];
  return list;
}

export const LOG_NAME_PATTERN = /^[A-Za-z0-9._-]{1,63}$/;

/** A log name that is safe as an etcd key part and a directory name. */
export function isValidLogName(log: string): boolean {
  return LOG_NAME_PATTERN.test(log) && log !== '.' && log !== '..';
}

/** What a sealed segment must contain, as the WAL store's repair and install checks take it. */
export function expectationOfMeta(meta: SegmentMeta): { segmentId: number; firstIndex: number; lastIndex: number; indexCount: number; aggregateChecksum: bigint | undefined } {
  return {
    segmentId: meta.segmentId,
    firstIndex: meta.firstIndex,
    lastIndex: meta.lastIndex,
    indexCount: meta.indexCount,
    aggregateChecksum: /^[0-9a-f]{16}$/.test(meta.aggregate) ? BigInt(`0x${meta.aggregate}`) : undefined,
  };
}
