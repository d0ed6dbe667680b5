// Child process for test/integration/crash.test.ts: opens a store and appends random payloads
// until it is killed (SIGKILL) by the parent, reporting on stdout, one line each:
//   open <lastIndex> <state>        the store opened
//   gen <index> <sha256-hex>         about to append this payload at this index (printed BEFORE
//                                    the append, so every byte the store may write is announced)
//   synced <inode> <byteLength>      an fsync/fdatasync of a file returned with it at this length
//                                    (printed before the store acts on the sync: the parent may
//                                    only cut a file above its last reported synced length)
//   ack <index> <sha256-hex>         append() resolved: the entry is acknowledged
//   done <lastIndex>                 maxEntries reached and the store closed
// Usage: node appender.mjs '{"dir":...,"seed":1,"segmentBytesMax":4096,"maxEntries":100000,"syncDelayMs":0}'
// Plain JS over the built package (dist/), as a user of the library would run it.
import { createHash } from 'node:crypto';
import { writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pino from 'pino';

const DIST = new URL('../../dist/index.js', import.meta.url);
const { WalStore } = await import(DIST.href);

const config = JSON.parse(process.argv[2] ?? '{}');
const syncDelayMs = config.syncDelayMs ?? 0;
const PAYLOAD_BYTES_MAX = 700;
const PAYLOAD_BYTES_LARGE_MAX = 3000;

function out(line) {
  const bytes = Buffer.from(`${line}\n`);
  let written = 0;
  while (written < bytes.byteLength) {
    try {
      written += writeSync(1, bytes, written);
    } catch (error) {
      if (error.code !== 'EAGAIN') throw error;
    }
  }
}

/** mulberry32: small, seedable, deterministic. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = rng(config.seed);
const int = (min, max) => min + Math.floor(random() * (max - min + 1));

function payload() {
  const byteLength = random() < 0.08 ? int(1000, PAYLOAD_BYTES_LARGE_MAX) : int(0, PAYLOAD_BYTES_MAX);
  const bytes = Buffer.allocUnsafe(byteLength);
  for (let i = 0; i < byteLength; i++) bytes[i] = int(0, 255);
  return bytes;
}

const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');

// Report every completed sync with the file's inode and length. The store acts on a sync (resolves
// appends, writes the catalog) only after it returns, so the line is out before anything relies on it.
async function instrumentSyncs() {
  const probe = await open(fileURLToPath(import.meta.url), 'r');
  const proto = Object.getPrototypeOf(probe);
  await probe.close();
  for (const method of ['sync', 'datasync']) {
    const original = proto[method];
    proto[method] = async function reportingSync() {
      // A slow disk: written bytes wait longer before they are durable, so kills land there too.
      if (syncDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, syncDelayMs));
      await original.call(this);
      const info = await this.stat();
      out(`synced ${info.ino} ${info.size}`);
    };
  }
}

await instrumentSyncs();
const store = await WalStore.open(config.dir, {
  segmentBytesMax: config.segmentBytesMax,
  checkpointBytes: 4096,
  logger: pino({ level: 'silent' }),
});
out(`open ${store.lastIndex} ${store.openReport.state}`);

let next = store.lastIndex + 1;
while (next <= config.maxEntries) {
  const mode = random();
  const count = mode < 0.5 ? 1 : int(2, 6);
  const payloads = Array.from({ length: count }, payload);
  payloads.forEach((p, i) => out(`gen ${next + i} ${sha(p)}`));
  let results;
  if (mode < 0.75) {
    const result = await store.append(count === 1 ? payloads[0] : payloads);
    results = [result];
  } else {
    results = await Promise.all(payloads.map((p) => store.append(p))); // group commit
  }
  const first = results[0].firstIndex;
  const last = results[results.length - 1].lastIndex;
  if (first !== next || last !== next + count - 1) {
    out(`error indices ${first}..${last}, expected ${next}..${next + count - 1}`);
    process.exit(3);
  }
  payloads.forEach((p, i) => out(`ack ${next + i} ${sha(p)}`));
  next += count;
}
await store.close();
out(`done ${store.lastIndex}`);
