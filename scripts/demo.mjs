#!/usr/bin/env node
// The README's main job: writes a log, damages it the ways disks do, and shows the
// wal-recovery CLI finding and repairing every kind of damage. Runs the real CLI on real files
// in a temporary directory, which it removes at the end (pass --keep to look at it afterwards).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'cli', 'main.js');
const keep = process.argv.includes('--keep');
const dir = mkdtempSync(join(tmpdir(), 'wal-recovery-demo-'));
const dataDir = join(dir, 'data');
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function run(args, input) {
  const shown = `wal-recovery ${args.join(' ')}`.replaceAll(dataDir, '$DATA');
  console.log(`\n${bold('$ ' + shown)}`);
  const result = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8' });
  const out = (result.stdout + result.stderr).replaceAll(dataDir, '$DATA').trimEnd();
  if (out) console.log(out.split('\n').map((l) => '  ' + l).join('\n'));
  console.log(`  (exit ${result.status})`);
  return result;
}

function step(title) {
  console.log(`\n${bold('== ' + title)}`);
}

function segmentPath(n) {
  const names = readdirSync(join(dataDir, 'segments')).filter((n) => n.endsWith('.wal')).sort();
  return join(dataDir, 'segments', names[n]);
}

try {
  step('1. Write 2,000 entries into a log with 16 KiB segments (one local backup of each sealed segment)');
  const lines = Array.from({ length: 2000 }, (_, i) => `order ${i + 1}: ${'payload '.repeat(1 + (i % 7))}`.trim());
  run(['append', '--data-dir', dataDir, '--segment-bytes', '16384', '--backups', '1'], lines.join('\n') + '\n');
  run(['validate', '--data-dir', dataDir]);

  step('2. The disk lies: flip one bit in a sealed segment, zero a 4 KiB block in another, delete a third');
  const flipped = segmentPath(1);
  const bytes = readFileSync(flipped);
  bytes[3000] ^= 0x10;
  writeFileSync(flipped, bytes);
  const zeroed = segmentPath(3);
  const fd = openSync(zeroed, 'r+');
  writeSync(fd, Buffer.alloc(4096), 0, 4096, 4096);
  closeSync(fd);
  unlinkSync(segmentPath(5));
  run(['validate', '--data-dir', dataDir]);

  step('3. Repair from the verified local backups (PartialReconstruct): a dry run first, then for real');
  run(['repair', '--data-dir', dataDir, '--strategy', 'partial', '--dry-run']);
  run(['repair', '--data-dir', dataDir, '--strategy', 'partial']);
  run(['validate', '--data-dir', dataDir]);

  step('4. A crash: a writer is killed with SIGKILL mid-append, and its last write is torn in half');
  const writer = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const { WalStore } = await import(${JSON.stringify(join(root, 'dist', 'index.js'))});
    const pino = (await import('pino')).default;
    const store = await WalStore.open(${JSON.stringify(dataDir)}, { logger: pino({ level: 'silent' }) });
    const appends = [];
    for (let i = 0; i < 50; i++) appends.push(store.append(Buffer.from('late entry ' + i)));
    await Promise.all(appends);
    console.log(store.lastIndex);
    process.kill(process.pid, 'SIGKILL'); // no close(): the open segment stays open, as after a crash
  `], { cwd: root, encoding: 'utf8' });
  console.log(`  a writer appended up to index ${writer.stdout.trim()} and was killed (${writer.signal})`);
  const names = readdirSync(join(dataDir, 'segments')).sort();
  const last = join(dataDir, 'segments', names[names.length - 1]);
  const lastBytes = readFileSync(last);
  // A torn write: the first 30 bytes of a frame reached the disk, the rest did not.
  writeFileSync(last, Buffer.concat([lastBytes, lastBytes.subarray(lastBytes.length - 60, lastBytes.length - 30)]));
  run(['validate', '--data-dir', dataDir]);
  console.log('  Opening the log (any verb that opens it, here dump) rolls the torn tail back, keeping the bytes in quarantine/:');
  run(['dump', '--data-dir', dataDir, '--from', '2049']);
  run(['validate', '--data-dir', dataDir]);

  step('5. Damage with no good copy left: SkipCorrupted records the hole and says so; reads of it say "entry lost"');
  const victim = segmentPath(2);
  for (const copy of readdirSync(join(dataDir, 'backups'))) rmSync(join(dataDir, 'backups', copy), { recursive: true, force: true });
  const v = readFileSync(victim);
  v[2000] ^= 0x01;
  writeFileSync(victim, v);
  run(['repair', '--data-dir', dataDir, '--strategy', 'partial', '--backups', '0']);
  run(['repair', '--data-dir', dataDir, '--strategy', 'skip', '--backups', '0']);
  run(['dump', '--data-dir', dataDir, '--from', '417', '--to', '421']);
  console.log(`\nThe data directory is ${keep ? dataDir : 'removed (pass --keep to keep it)'}.`);
} finally {
  if (!keep) rmSync(dir, { recursive: true, force: true });
}
