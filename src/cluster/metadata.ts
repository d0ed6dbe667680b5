// What the cluster layer needs of etcd, as one narrow interface: JSON values under the cluster's
// keys, create-only puts and compare-and-swap (etcd transactions), prefix ranges, leases with a
// TTL kept alive in the background (whose loss the client learns late), and prefix watches.
// Production wires EtcdMetadata (etcd3, src/cluster/etcd.ts); the simulator wires SimEtcd
// (src/sim/directory.ts), whose leases expire in virtual time. Election, NodeSession,
// EtcdSegmentDirectory and the coordinator's report store depend on this interface only.

export const KEY_ROOT = '/wal-recovery';

export class ClusterKeys {
  readonly root: string;
  constructor(readonly cluster: string) {
    this.root = `${KEY_ROOT}/${cluster}/`;
  }
  membersPrefix(): string {
    return `${this.root}members/`;
  }
  member(nodeId: string): string {
    return `${this.membersPrefix()}${nodeId}`;
  }
  coordinatorPrefix(): string {
    return `${this.root}coordinator/`;
  }
  reportsPrefix(): string {
    return `${this.root}reports/`;
  }
  report(log: string, segmentId: number, node: string): string {
    return `${this.reportsPrefix()}${log}/${String(segmentId).padStart(20, '0')}/${node}`;
  }
  logsPrefix(): string {
    return `${this.root}logs/`;
  }
  logMeta(log: string): string {
    return `${this.logsPrefix()}${log}/meta`;
  }
  writerPrefix(log: string): string {
    return `${this.logsPrefix()}${log}/writer/`;
  }
  /** The writer election's epoch floor (outside the writer/ prefix: it is no candidate). */
  writerEpochFloor(log: string): string {
    return `${this.logsPrefix()}${log}/writer-floor`;
  }
  segmentsPrefix(log: string): string {
    return `${this.logsPrefix()}${log}/segments/`;
  }
  segment(log: string, segmentId: number): string {
    return `${this.segmentsPrefix(log)}${String(segmentId).padStart(20, '0')}`;
  }
}

/** A condition of ClusterMetadata.createWhile. */
export type KeyGuard = { readonly key: string; readonly createRevision: number } | { readonly key: string; readonly modRevision: number };

/** Told of a key left out of a list because its value did not decode. */
export type OnMalformedValue = (key: string, error: MalformedValueError) => void;

/** A value in etcd that is not JSON, or not what its key should hold. */
export class MalformedValueError extends Error {
  override readonly name = 'MalformedValueError';
  constructor(readonly key: string, detail: string, options?: { cause?: unknown }) {
    super(`etcd key ${key}: ${detail}`, options);
  }
}

/** Decodes one value (JSON, then parse); a failure is a MalformedValueError naming the key. */
export function decodeValue<T>(key: string, text: string, parse: (raw: unknown) => T): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new MalformedValueError(key, `not JSON (${text.length} bytes)`, { cause: error });
  }
  try {
    return parse(raw);
  } catch (error) {
    throw new MalformedValueError(key, error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/**
 * Decodes each record of a list on its own: with onMalformed, a record that does not decode is
 * reported and left out; without, it fails the list.
 */
export function decodeEach<R, V>(records: readonly R[], decode: (record: R) => V, keyOf: (record: R) => string, onMalformed?: OnMalformedValue): V[] {
  const out: V[] = [];
  for (const record of records) {
    try {
      out.push(decode(record));
    } catch (error) {
      const malformed = error instanceof MalformedValueError ? error : new MalformedValueError(keyOf(record), String(error), { cause: error });
      if (!onMalformed) throw malformed;
      onMalformed(malformed.key, malformed);
    }
  }
  return out;
}

export interface Versioned<T> {
  readonly key: string;
  readonly value: T;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly lease: string;
}

/**
 * A lease kept alive in the background once granted (etcd3's Lease in production). 'lost' fires
 * when the client learns the lease is gone: etcd said so, or keepalives failed for long enough;
 * etcd may have expired it (and deleted its keys) well before.
 */
export interface MetadataLease {
  /** Grants the lease (once; later calls return the same id). */
  grant(): Promise<string>;
  revoke(): Promise<void>;
  /** Stops keeping the lease alive; etcd expires it after its TTL. */
  release(): void;
  on(event: 'lost', handler: (error: Error) => void): unknown;
}

/** The cluster's key space in etcd: JSON values, parse validates each value read. */
export interface ClusterMetadata<L extends MetadataLease = MetadataLease> {
  readonly keys: ClusterKeys;
  /** A new lease of ttlSeconds (not granted until grant()). */
  lease(ttlSeconds: number): L;
  get<T>(key: string, parse: (raw: unknown) => T): Promise<Versioned<T> | undefined>;
  /**
   * Every key under prefix, in key order. A value that is not JSON, or that parse refuses, fails
   * the whole list (MalformedValueError naming its key) unless onMalformed is given: then that key
   * alone is left out and reported, and the others are answered.
   */
  list<T>(prefix: string, parse: (raw: unknown) => T, onMalformed?: OnMalformedValue): Promise<Array<Versioned<T>>>;
  /** The key under prefix with the lowest create revision (an election's leader), if any. */
  firstCreated<T>(prefix: string, parse: (raw: unknown) => T): Promise<Versioned<T> | undefined>;
  /** Creates the key only if it does not exist; the revision, or undefined when it existed. */
  create(key: string, value: unknown, lease?: L): Promise<number | undefined>;
  /**
   * Creates key only if it does not exist and every guard holds (one transaction): a key that
   * still exists with that create revision (an election key still held), or a key last modified
   * at that mod revision (a record as its writer last wrote it). The new revision, or undefined.
   */
  createWhile(key: string, value: unknown, guards: readonly KeyGuard[]): Promise<number | undefined>;
  /**
   * Creates key (bound to lease) only if it does not exist and guardKey was last modified at
   * guardModRevision (0: guardKey does not exist); the new revision, or undefined.
   */
  createWhileUnchanged(key: string, value: unknown, lease: L, guardKey: string, guardModRevision: number): Promise<number | undefined>;
  /** Replaces the value only if the key was last modified at modRevision; the new mod revision. */
  compareAndSwap(key: string, value: unknown, modRevision: number): Promise<number | undefined>;
  put(key: string, value: unknown, lease?: L): Promise<void>;
  delete(key: string): Promise<void>;
  /** Deletes the key only if it was last modified at modRevision. */
  deleteIfUnchanged(key: string, modRevision: number): Promise<void>;
  /** Calls onChange after every put or delete under prefix (possibly late), until the returned function. */
  watchPrefix(prefix: string, onChange: (key: string, deleted: boolean) => void): Promise<() => Promise<void>>;
}
