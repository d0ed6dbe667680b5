// Detection results: what validation, open, read or scrub found wrong, as values.
// A finding names where the damage is (log, segment, entry index, byte offset) and what it is.

export type FindingKind =
  /** Damage at the end of the open segment with no intact entry after it: a write cut by a crash. */
  | 'torn'
  /** An entry whose header is intact but whose SHA3 checksum does not match its bytes. */
  | 'checksum-mismatch'
  /** An entry header that fails its crc32, or bytes where a frame should start. */
  | 'bad-entry-header'
  /** The segment header fails its checksum or does not match the file's name or log. */
  | 'bad-header'
  /** The trailer of a sealed segment is damaged, or disagrees with the entries before it. */
  | 'bad-trailer'
  /** Bytes after a valid trailer. */
  | 'trailing-garbage'
  /** A segment the catalog lists has no file. */
  | 'missing-segment'
  /** Indices are missing between two intact entries, or between two segments. */
  | 'index-gap'
  /** An intact entry stands where another index belongs (duplicated or misplaced bytes). */
  | 'misplaced-entry'
  /** The catalog is missing, fails its checksum, or disagrees with the segment files. */
  | 'bad-catalog'
  /** A file in segments/ that is not a segment of this log, or a duplicate of one. */
  | 'unexpected-file'
  /** A local backup copy of a sealed segment is damaged or missing. */
  | 'backup-damaged';

export interface Finding {
  readonly kind: FindingKind;
  readonly log: string;
  /** The segment id, when the finding concerns one segment. */
  readonly segment?: number;
  /** The first log index concerned, when it is known. */
  readonly entryIndex?: number;
  /** The number of indices concerned (a damaged range may cover several entries). */
  readonly indexCount?: number;
  readonly offsetBytes?: number;
  readonly byteLength?: number;
  readonly expectedChecksum?: string;
  readonly actualChecksum?: string;
  /** The file concerned, relative to the data directory. */
  readonly file?: string;
  readonly detail: string;
}

/** A finding as a one-line sentence, for logs and the CLI. */
export function describeFinding(finding: Finding): string {
  const where: string[] = [];
  if (finding.segment !== undefined) where.push(`segment ${finding.segment}`);
  if (finding.entryIndex !== undefined) {
    const last = finding.entryIndex + (finding.indexCount ?? 1) - 1;
    where.push(last > finding.entryIndex ? `entries ${finding.entryIndex}..${last}` : `entry ${finding.entryIndex}`);
  }
  if (finding.offsetBytes !== undefined) where.push(`offset ${finding.offsetBytes}`);
  if (finding.byteLength !== undefined) where.push(`${finding.byteLength} bytes`);
  const at = where.length > 0 ? ` (${where.join(', ')})` : '';
  return `${finding.kind}${at}: ${finding.detail}`;
}
