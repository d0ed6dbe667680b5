// NodeDisk.copyFile streams through handles it checked (a FIFO is refused, fifo-files.test.ts). A
// copy that fails part way must remove what it wrote, as fs.copyFile (libuv) does: every caller
// copies to a temp name (segment .tmp, .cut.tmp, backup .tmp), and a part copy left by ENOSPC kept
// the rest of the disk full, so appends kept failing after the copy gave up. A real small tmpfs
// (needs mount: skipped where the test may not mount one).
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeDisk } from '../../src/io/index.js';

let root: string;
let small: string;
let mounted = false;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'wal-copy-'));
  small = join(root, 'small');
  execFileSync('mkdir', ['-p', small]);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small], { stdio: 'ignore' });
    mounted = true;
  } catch {
    mounted = false;
  }
});

afterAll(async () => {
  if (mounted) execFileSync('umount', [small]);
  await rm(root, { recursive: true, force: true });
});

describe('NodeDisk.copyFile', () => {
  it('a copy that runs out of space fails with ENOSPC and leaves no part copy behind', async (context) => {
    if (!mounted) context.skip();
    const source = join(root, 'segment');
    await writeFile(source, randomBytes(8 * 1024 * 1024));
    const target = join(small, 'segment.tmp');
    await expect(nodeDisk.copyFile(source, target)).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a copy that succeeds is byte for byte its source', async () => {
    const source = join(root, 'whole');
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(source, bytes);
    const target = join(root, 'whole.tmp');
    await nodeDisk.copyFile(source, target);
    const { readFile } = await import('node:fs/promises');
    expect((await readFile(target)).equals(bytes)).toBe(true);
  });
});
