// Revoked certificates (issue 11, review finding 11): a file the operator keeps, one certificate
// a line, named by its serial number (hex, as `openssl x509 -serial` prints it) or by its SHA-256
// fingerprint (64 hex digits, colons allowed, as `openssl x509 -fingerprint -sha256` prints it).
// Blank lines and text after '#' are ignored.
//
// The node reads it at start (a missing or unreadable file stops it: revocation asked for must
// not silently be none) and re-reads it when its modification time or size changes, checked every
// REVOCATION_POLL_MS. A file that cannot be read later keeps the last list in force (logged): a
// half-written file must not un-revoke anyone. For the same reason a re-read that adds entries
// applies at once, but one that drops entries (a file truncated and then written again reads
// empty or short for a moment) applies only once the file has stayed the same for a whole poll:
// until then the entries dropped stay revoked. A caller whose certificate is listed is refused
// UNAUTHENTICATED by the role guard; a node does not complete a connection to a peer whose
// certificate is listed (the TLS handshake fails, the call is UNAVAILABLE).
import { readFileSync, statSync } from 'node:fs';
import type { X509Certificate } from 'node:crypto';

/** How often the file's modification time and size are looked at. */
export const REVOCATION_POLL_MS = 1_000;
/** A list longer than this is refused: a node holds it in memory and reads it every second. */
export const REVOKED_ENTRIES_MAX = 100_000;
/** A file larger than this is refused before it is read (100 000 fingerprint lines fit). */
export const REVOKED_FILE_BYTES_MAX = 16 * 1024 * 1024;

export class RevocationListError extends Error {
  override readonly name = 'RevocationListError';
  constructor(readonly path: string, detail: string, options?: { cause?: unknown }) {
    super(`revocation list ${path}: ${detail}`, options);
  }
}

/** Serials and fingerprints, upper-case hex without colons; serials without leading zeros. */
export function parseRevocationList(text: string, path = '(text)'): Set<string> {
  const entries = new Set<string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const line = (lines[i] as string).replace(/#.*/, '').trim();
    if (line === '') continue;
    const value = line.replace(/^(serial|sha256 fingerprint)=/i, '').replace(/:/g, '').toUpperCase();
    if (!/^[0-9A-F]{1,64}$/.test(value)) throw new RevocationListError(path, `line ${i + 1} is neither a serial number nor a SHA-256 fingerprint in hex: ${line.slice(0, 80)}`);
    entries.add(normalizeSerial(value));
    if (entries.size > REVOKED_ENTRIES_MAX) throw new RevocationListError(path, `more than ${REVOKED_ENTRIES_MAX} entries`);
  }
  return entries;
}

function normalizeSerial(hex: string): string {
  // A 64-digit value is a fingerprint: its leading zeros are part of it.
  return hex.length === 64 ? hex : hex.replace(/^0+(?=.)/, '');
}

/** The names a certificate may be listed under. */
export function certificateKeys(cert: Pick<X509Certificate, 'serialNumber' | 'fingerprint256'>): string[] {
  return [normalizeSerial(cert.serialNumber.toUpperCase()), cert.fingerprint256.replace(/:/g, '').toUpperCase()];
}

export class RevocationList {
  private entries: Set<string>;
  private seen: string;
  /** A shorter list read from the file as it was at version: in force once the file stays so for a poll. */
  private shrunk: { readonly version: string; readonly entries: Set<string> } | undefined;
  private readonly timer: NodeJS.Timeout;

  /** Told of every re-read (how many entries) and of a file that cannot be read (the old list stays). */
  onReload: (event: { entries: number } | { error: Error }) => void = () => undefined;

  constructor(readonly path: string, pollMs = REVOCATION_POLL_MS) {
    this.seen = this.fileVersion();
    this.entries = this.read();
    this.timer = setInterval(() => this.poll(), pollMs);
    this.timer.unref();
  }

  /**
   * Counts the re-reads that revoked someone new: a connection made before the count moved may be
   * to a server revoked since (its certificate is checked in the handshake only), so clients make
   * a new one (src/rpc/clients.ts).
   */
  get generation(): number {
    return this.revokedMore;
  }

  private revokedMore = 0;
  private readonly revokedListeners = new Set<() => void>();

  /** Calls listener after each re-read that revoked someone new (the guard ends their open calls); returns the unsubscribe. */
  onRevoked(listener: () => void): () => void {
    this.revokedListeners.add(listener);
    return () => this.revokedListeners.delete(listener);
  }

  get size(): number {
    return this.entries.size;
  }

  isRevoked(cert: Pick<X509Certificate, 'serialNumber' | 'fingerprint256'>): boolean {
    return certificateKeys(cert).some((key) => this.entries.has(key));
  }

  /** Re-reads the file now if it changed (also what the timer does). */
  poll(): void {
    let version: string;
    try {
      version = this.fileVersion();
    } catch (error) {
      this.onReload({ error: error as Error });
      return;
    }
    if (version === this.seen) {
      if (this.shrunk?.version !== version) return;
      this.entries = this.shrunk.entries; // unchanged for a whole poll: not a file caught mid-write
      this.shrunk = undefined;
      this.onReload({ entries: this.entries.size });
      return;
    }
    let read: Set<string>;
    try {
      read = this.read();
    } catch (error) {
      this.onReload({ error: error as Error });
      return;
    }
    this.seen = version;
    const revokedMore = [...read].some((key) => !this.entries.has(key));
    if (revokedMore) this.revokedMore += 1;
    if ([...this.entries].every((key) => read.has(key))) {
      this.entries = read;
      this.shrunk = undefined;
    } else {
      this.entries = new Set([...this.entries, ...read]);
      this.shrunk = { version, entries: read };
    }
    this.onReload({ entries: this.entries.size });
    if (revokedMore) for (const listener of this.revokedListeners) listener();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private fileVersion(): string {
    try {
      const s = statSync(this.path);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    } catch (error) {
      throw new RevocationListError(this.path, `cannot be read: ${(error as Error).message}`, { cause: error });
    }
  }

  private read(): Set<string> {
    let text: string;
    try {
      const bytes = statSync(this.path).size;
      if (bytes > REVOKED_FILE_BYTES_MAX) throw new Error(`${bytes} bytes, more than ${REVOKED_FILE_BYTES_MAX}`);
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      throw new RevocationListError(this.path, `cannot be read: ${(error as Error).message}`, { cause: error });
    }
    return parseRevocationList(text, this.path);
  }
}
