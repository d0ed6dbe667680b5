// RevocationList re-reads (review of issue 11), on a real file: an operator who rewrites the list
// in place (truncate, then write, as `>` in a shell or most editors do) must not un-revoke anyone
// while the file is empty or short; a list that really drops an entry still takes effect once the
// file stays the same for a poll; what a re-read adds applies at once; a huge file is refused.
import { mkdtemp, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REVOKED_FILE_BYTES_MAX, RevocationList, certificateKeys, parseRevocationList } from '../../src/rpc/revocation.js';

const A = { serialNumber: '0A', fingerprint256: 'AA:'.repeat(31) + 'AA', fingerprint: 'A1:'.repeat(19) + 'A1' };
const B = { serialNumber: '0B', fingerprint256: 'BB:'.repeat(31) + 'BB', fingerprint: 'B1:'.repeat(19) + 'B1' };
const C = { serialNumber: '0C', fingerprint256: 'CC:'.repeat(31) + 'CC', fingerprint: 'C1:'.repeat(19) + 'C1' };

let dir: string;
let path: string;
let list: RevocationList | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wal-revocation-list-'));
  path = join(dir, 'revoked.txt');
});

afterEach(async () => {
  list?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('RevocationList re-reads', () => {
  it('a file rewritten in place (truncated, then written line by line) never un-revokes an entry it keeps', async () => {
    await writeFile(path, 'serial=0A\nserial=0B\n');
    list = new RevocationList(path, 3_600_000); // polled by hand
    await truncate(path, 0); // the moment after `>` opened it
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B)]).toEqual([true, true]);
    await writeFile(path, 'serial=0A\n'); // half written
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B)]).toEqual([true, true]);
    await writeFile(path, 'serial=0A\nserial=0B\nserial=0C\n'); // done, with one more
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B), list.isRevoked(C)]).toEqual([true, true, true]);
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B), list.isRevoked(C)]).toEqual([true, true, true]);
  });

  it('an entry really dropped is un-revoked once the file stayed the same for a poll; an entry added applies at once', async () => {
    await writeFile(path, 'serial=0A\nserial=0B\n');
    list = new RevocationList(path, 3_600_000);
    await writeFile(path, '0B\n0C\n');
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B), list.isRevoked(C)]).toEqual([true, true, true]);
    expect(list.generation).toBe(1); // C is new: clients open new connections
    list.poll(); // unchanged since: in force
    expect([list.isRevoked(A), list.isRevoked(B), list.isRevoked(C)]).toEqual([false, true, true]);
    expect(list.size).toBe(2);
    expect(list.generation).toBe(1); // un-revoking asks for no new connection
  });

  it('a rewrite of the same size in the same tick of the file system clock (same modification time) is seen (regression: its revocation went unseen)', async () => {
    const tick = new Date(Math.floor(Date.now() / 1000) * 1000); // both writes land in one tick
    await writeFile(path, 'serial=0A\n');
    await utimes(path, tick, tick);
    list = new RevocationList(path, 3_600_000);
    await writeFile(path, 'serial=0B\n'); // same size, same inode
    await utimes(path, tick, tick);
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B)]).toEqual([true, true]); // A dropped: in force after a quiet poll
    expect(list.generation).toBe(1);
    list.poll();
    expect([list.isRevoked(A), list.isRevoked(B)]).toEqual([false, true]);
  });

  it('a file larger than REVOKED_FILE_BYTES_MAX is refused and the last list stays', async () => {
    await writeFile(path, 'serial=0A\n');
    list = new RevocationList(path, 3_600_000);
    const errors: string[] = [];
    list.onReload = (event) => 'error' in event && errors.push(event.error.message);
    await writeFile(path, `${'#'.repeat(REVOKED_FILE_BYTES_MAX)}\n`);
    list.poll();
    expect(errors[0]).toMatch(/more than/);
    expect(list.isRevoked(A)).toBe(true);
  });

  it('parses what an operator pastes: a byte-order mark (trim() drops it), CRLF, lower-case hex with colons, leading zeros', () => {
    expect([...parseRevocationList('\uFEFFserial=000A\r\n' + 'aa:'.repeat(31) + 'aa\r\n')]).toEqual(['A', 'AA'.repeat(32)]);
  });
});

describe('what a line names (serial or fingerprint)', () => {
  const sha1 = 'D1'.repeat(20);
  // A certificate with a 20-byte serial: its serial and its SHA-1 fingerprint are both 40 hex digits.
  const D = { serialNumber: 'E2'.repeat(20), fingerprint256: 'DD'.repeat(32), fingerprint: sha1 };

  it('40 hex digits without a prefix revoke the certificate with that serial and the one with that SHA-1 fingerprint (regression: a SHA-1 fingerprint was read as a serial only and revoked no one)', () => {
    for (const line of [sha1, `${'d1:'.repeat(19)}d1`]) expect(certificateKeys(D).some((key) => parseRevocationList(`${line}\n`).has(key)), line).toBe(true);
    const bySerial = parseRevocationList(`${'E2'.repeat(20)}\n`);
    expect(certificateKeys(D).some((key) => bySerial.has(key))).toBe(true);
    expect(certificateKeys(A).some((key) => parseRevocationList(`${sha1}\n`).has(key))).toBe(false);
  });

  it('a prefix decides: sha1: revokes by SHA-1 fingerprint, serial= by a 40-digit serial, sha256: by SHA-256', () => {
    for (const line of [`sha1:${sha1}`, `SHA1 Fingerprint=${'D1:'.repeat(19)}D1`, `serial=${'E2'.repeat(20)}`, `sha256:${'dd'.repeat(32)}`, 'DD'.repeat(32)]) {
      const entries = parseRevocationList(`${line}\n`);
      expect(entries.size, line).toBe(1);
      expect(certificateKeys(D).some((key) => entries.has(key)), line).toBe(true);
      expect(certificateKeys(A).some((key) => entries.has(key)), line).toBe(false);
    }
    // A serial equal to another certificate's SHA-1 fingerprint does not revoke that one.
    expect(certificateKeys(D).some((key) => parseRevocationList(`serial=${sha1}\n`).has(key))).toBe(false);
  });

  it('a fingerprint or serial of the wrong length for its prefix is refused', () => {
    expect(() => parseRevocationList(`sha1:${'AB'.repeat(32)}\n`)).toThrow(/SHA-1 fingerprint of 64/);
    expect(() => parseRevocationList(`sha256:${sha1}\n`)).toThrow(/SHA-256 fingerprint of 40/);
    expect(() => parseRevocationList(`serial=${'AB'.repeat(32)}\n`)).toThrow(/serial number of 64/);
    expect([...parseRevocationList('serial=00AB\n0c\n')]).toEqual(['AB', 'C']);
  });
});
