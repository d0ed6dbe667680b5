// RevocationList re-reads (review of issue 11), on a real file: an operator who rewrites the list
// in place (truncate, then write, as `>` in a shell or most editors do) must not un-revoke anyone
// while the file is empty or short; a list that really drops an entry still takes effect once the
// file stays the same for a poll; what a re-read adds applies at once; a huge file is refused.
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REVOKED_FILE_BYTES_MAX, RevocationList, parseRevocationList } from '../../src/rpc/revocation.js';

const A = { serialNumber: '0A', fingerprint256: 'AA:'.repeat(31) + 'AA' };
const B = { serialNumber: '0B', fingerprint256: 'BB:'.repeat(31) + 'BB' };
const C = { serialNumber: '0C', fingerprint256: 'CC:'.repeat(31) + 'CC' };

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
