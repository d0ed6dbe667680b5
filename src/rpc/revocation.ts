// Revoked certificates (issue 11, review finding 11): a file the operator keeps, one certificate
// a line, named by its serial number (hex, as `openssl x509 -serial` prints it) or by a
// fingerprint (hex, colons allowed, as `openssl x509 -fingerprint -sha256` or `-sha1` prints it).
// Blank lines and text after '#' are ignored. What a line names is decided by its prefix
// (`serial=` or `serial:`; `sha256 fingerprint=` or `sha256:`; `sha1 fingerprint=` or `sha1:`,
// any case). A line without one is a serial, except 64 hex digits (a SHA-256 fingerprint: no
// serial is that long, RFC 5280 caps them at 20 bytes) and exactly 40 (a 20-byte serial, as
// `certs` makes them, or a SHA-1 fingerprint alike): such a line revokes both the certificate
// with that serial and the one with that SHA-1 fingerprint, so that a fingerprint pasted bare is
// never taken for a serial only and left unrevoked (naming more is the safe side; an accidental
// match between a serial and another certificate's SHA-1 is a 2^-160 chance). A prefix of the
// wrong length for what it names is refused, like any line that names nothing.
//
// The node reads it at start (a missing or unreadable file stops it: revocation asked for must
// not silently be none) and re-reads it when its modification time, size or inode changes (or,
// for REVOCATION_RACY_MS after a change, its contents), checked every REVOCATION_POLL_MS. A file that cannot be read later keeps the last list in force (logged): a
// half-written file must not un-revoke anyone. For the same reason a re-read that adds entries
// applies at once, but one that drops entries (a file truncated and then written again reads
// empty or short for a moment) applies only once the file has stayed the same for a whole poll:
// until then the entries dropped stay revoked. A caller whose certificate is listed is refused
// UNAUTHENTICATED by the role guard; a node does not complete a connection to a peer whose
// certificate is listed (the TLS handshake fails, the call is UNAVAILABLE).
import { readFileSync, statSync } from 'node:fs';
import { type X509Certificate, createHash } from 'node:crypto';
import { RevocationListError } from './errors.js';

/** How often the file's modification time and size are looked at. */
export const REVOCATION_POLL_MS = 1_000;
/**
 * For this long after a change of the file was seen, a poll that finds the same modification time,
 * size and inode compares the contents too: two writes within one tick of the file system's clock
 * (a few ms; a second on some) leave the same time, and a second write of the same size went
 * unseen (a certificate revoked by it stayed accepted until the file changed again).
 */
export const REVOCATION_RACY_MS = 2_000;
/** A list longer than this is refused: a node holds it in memory and reads it every second. */
export const REVOKED_ENTRIES_MAX = 100_000;
/** A file larger than this is refused before it is read (100 000 fingerprint lines fit). */
export const REVOKED_FILE_BYTES_MAX = 16 * 1024 * 1024;

/** Hex digits of a serial number: RFC 5280 caps serials at 20 bytes (one more for a leading zero byte). */
const SERIAL_DIGITS_MAX = 40;
/** The key a SHA-1 fingerprint is kept under: 40 digits, the same as a 20-byte serial's. */
const SHA1_KEY = 'SHA1:';

/**
 * Serials and fingerprints, upper-case hex without colons: serials without leading zeros, SHA-256
 * fingerprints as they are, SHA-1 fingerprints under SHA1_KEY.
 */
export function parseRevocationList(text: string, path = '(text)'): Set<string> {
  const entries = new Set<string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const line = (lines[i] as string).replace(/#.*/, '').trim();
    if (line === '') continue;
    const refuse = (why: string): never => {
      throw new RevocationListError(path, `line ${i + 1} ${why}: ${line.slice(0, 80)}`);
    };
    const prefixed = /^(serial|sha1|sha256)(?: fingerprint)?\s*[=:]\s*(.*)$/i.exec(line);
    const kind = prefixed ? (prefixed[1] as string).toLowerCase() : undefined;
    const value = (prefixed ? (prefixed[2] as string) : line).replace(/:/g, '').toUpperCase();
    if (!/^[0-9A-F]{1,64}$/.test(value)) refuse('is neither a serial number nor a SHA-256 or SHA-1 fingerprint in hex');
    if (kind === 'sha256' || (kind === undefined && value.length === 64)) {
      if (value.length !== 64) refuse(`names a SHA-256 fingerprint of ${value.length} hex digits, not 64`);
      entries.add(value);
    } else if (kind === 'sha1') {
      if (value.length !== 40) refuse(`names a SHA-1 fingerprint of ${value.length} hex digits, not 40`);
      entries.add(SHA1_KEY + value);
    } else {
      // 40 digits bare: a 20-byte serial or a SHA-1 fingerprint; both are revoked.
      if (kind === undefined && value.length === 40) entries.add(SHA1_KEY + value);
      const serial = normalizeSerial(value);
      if (serial.length > SERIAL_DIGITS_MAX) refuse(`names a serial number of ${serial.length} hex digits (at most ${SERIAL_DIGITS_MAX}, 20 bytes)`);
      entries.add(serial);
    }
    if (entries.size > REVOKED_ENTRIES_MAX) throw new RevocationListError(path, `more than ${REVOKED_ENTRIES_MAX} entries`);
  }
  return entries;
}

function normalizeSerial(hex: string): string {
  return hex.replace(/^0+(?=.)/, '');
}

/** The names a certificate may be listed under. */
export function certificateKeys(cert: Pick<X509Certificate, 'serialNumber' | 'fingerprint256' | 'fingerprint'>): string[] {
  return [normalizeSerial(cert.serialNumber.toUpperCase()), cert.fingerprint256.replace(/:/g, '').toUpperCase(), SHA1_KEY + cert.fingerprint.replace(/:/g, '').toUpperCase()];
}

export class RevocationList {
  private entries: Set<string>;
  private seen: string;
  /** A shorter list read from the file as it was at version: in force once the file stays so for a poll. */
  private shrunk: { readonly version: string; readonly entries: Set<string> } | undefined;
  private readonly timer: NodeJS.Timeout;

  /** Told of every re-read (how many entries) and of a file that cannot be read (the old list stays). */
  onReload: (event: { entries: number } | { error: Error }) => void = () => undefined;

  /** When seen was first seen (wall clock), and a digest of the text read then. */
  private seenAtMs: number;
  private digest = '';

  constructor(readonly path: string, pollMs = REVOCATION_POLL_MS) {
    this.seen = this.fileVersion();
    this.seenAtMs = Date.now();
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

  isRevoked(cert: Pick<X509Certificate, 'serialNumber' | 'fingerprint256' | 'fingerprint'>): boolean {
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
    if (version === this.seen && !this.changedInSameTick()) {
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
    if (version !== this.seen) this.seenAtMs = Date.now();
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

  /** Within REVOCATION_RACY_MS of a change: whether the text differs from the one last read. */
  private changedInSameTick(): boolean {
    if (Date.now() - this.seenAtMs >= REVOCATION_RACY_MS) return false;
    try {
      return digestOf(this.readText()) !== this.digest;
    } catch {
      return false; // unreadable now: the next poll sees it
    }
  }

  private readText(): string {
    const bytes = statSync(this.path).size;
    if (bytes > REVOKED_FILE_BYTES_MAX) throw new Error(`${bytes} bytes, more than ${REVOKED_FILE_BYTES_MAX}`);
    return readFileSync(this.path, 'utf8');
  }

  private read(): Set<string> {
    let text: string;
    try {
      text = this.readText();
    } catch (error) {
      throw new RevocationListError(this.path, `cannot be read: ${(error as Error).message}`, { cause: error });
    }
    const entries = parseRevocationList(text, this.path);
    this.digest = digestOf(text);
    return entries;
  }
}

function digestOf(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
