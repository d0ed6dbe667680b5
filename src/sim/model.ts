// The checker: a model of what clients were told, independent of the code under test. It
// records every acknowledgement and every read as they happen and checks the invariants
// (DESIGN.md section 6) after every step; the final check compares the log the cluster holds
// once every fault is healed with everything acknowledged and everything read.
//
// Online (after every step):
//   - no two acknowledgements name the same index with different entries (two writers, or a
//     writer that reused an index);
//   - no read returns bytes that differ from an entry acknowledged at that index.
// Final (after quiescence):
//   - every acknowledged entry is in the log at its index, byte for byte (invariant 1);
//   - every entry a reader was given is in the log at its index (invariant 7: never served
//     before it was durable on a quorum, nor after it was cut);
//   - the sealed copies of every segment agree with etcd's record and with each other;
//   - the log still accepts appends (liveness);
//   - every session batch is in the log once, whole and in order, or not at all (exactly-once
//     appends: a retry answered with the original indices, never appended again; a recovery
//     never seals inside a batch). With acknowledged-entries-survive: every acknowledged session
//     batch exactly once.

export interface Violation {
  readonly invariant: string;
  readonly detail: string;
  readonly atMs: number;
}

export class Model {
  /** index -> the entry acknowledged there (payload as text). */
  readonly acked = new Map<number, string>();
  /** Every read served: index and what it returned. */
  readonly reads: Array<{ index: number; payload: string; node: string; atMs: number }> = [];
  readonly violations: Violation[] = [];
  /** Every session batch a client sent (session id/sequence -> its payloads), acknowledged or not. */
  readonly sessionBatches = new Map<string, readonly string[]>();
  appendsAcked = 0;
  appendsFailed = 0;
  readsServed = 0;
  readsFailed = 0;

  constructor(private readonly now: () => number) {}

  violate(invariant: string, detail: string): void {
    if (this.violations.length < 50) this.violations.push({ invariant, detail, atMs: this.now() });
  }

  ack(firstIndex: number, lastIndex: number, payloads: readonly string[]): void {
    this.appendsAcked += 1;
    if (lastIndex - firstIndex + 1 !== payloads.length) {
      this.violate('ack-shape', `acknowledged ${firstIndex}..${lastIndex} for ${payloads.length} entries`);
      return;
    }
    payloads.forEach((payload, i) => {
      const index = firstIndex + i;
      const before = this.acked.get(index);
      if (before !== undefined && before !== payload) this.violate('one-entry-per-index', `index ${index} acknowledged as ${before} and later as ${payload}`);
      this.acked.set(index, payload);
    });
  }

  sessionBatch(key: string, payloads: readonly string[]): void {
    this.sessionBatches.set(key, payloads);
  }

  read(index: number, payload: string, node: string): void {
    this.readsServed += 1;
    this.reads.push({ index, payload, node, atMs: this.now() });
    const acked = this.acked.get(index);
    if (acked !== undefined && acked !== payload) this.violate('reads-return-acknowledged-entries', `${node} returned ${payload} at index ${index}, where ${acked} was acknowledged`);
  }

  /** Compares the final log (index -> payload, as the cluster holds it) with the history. */
  checkFinal(finalLog: ReadonlyMap<number, string>, committedIndex: number): void {
    for (const [index, payload] of [...this.acked.entries()].sort((a, b) => a[0] - b[0])) {
      const held = finalLog.get(index);
      if (held === undefined) this.violate('acknowledged-entries-survive', `acknowledged entry ${index} (${payload}) is not in the log (committed index ${committedIndex})`);
      else if (held !== payload) this.violate('acknowledged-entries-survive', `acknowledged entry ${index} was ${payload}, the log now holds ${held}`);
    }
    this.checkSessionBatches(finalLog);
    for (const read of this.reads) {
      const held = finalLog.get(read.index);
      if (held !== read.payload) {
        this.violate('reads-return-acknowledged-entries', `${read.node} served ${read.payload} at index ${read.index} at ${read.atMs.toFixed(1)} ms; the log holds ${held ?? 'nothing'} there (the entry was never acknowledged, or was cut)`);
      }
    }
  }

  /** Each session batch: in the final log once, its payloads at consecutive indices, or absent. */
  private checkSessionBatches(finalLog: ReadonlyMap<number, string>): void {
    const at = new Map<string, number[]>();
    for (const [index, payload] of finalLog) {
      const indices = at.get(payload);
      if (indices) indices.push(index);
      else at.set(payload, [index]);
    }
    for (const [key, payloads] of this.sessionBatches) {
      const found = payloads.map((p) => (at.get(p) ?? []).sort((a, b) => a - b));
      const twice = found.findIndex((indices) => indices.length > 1);
      if (twice >= 0) {
        this.violate('session-at-most-once', `session batch ${key}: ${payloads[twice]} is in the log at ${(found[twice] as number[]).join(', ')}`);
        continue;
      }
      const present = found.filter((indices) => indices.length === 1).length;
      if (present === 0) continue;
      const first = (found[0] as number[])[0];
      const whole = present === payloads.length && first !== undefined && found.every((indices, i) => indices[0] === first + i);
      if (!whole) this.violate('session-batch-whole', `session batch ${key}: ${present} of its ${payloads.length} entries are in the log, at ${found.map((i) => i[0] ?? '-').join(', ')}`);
    }
  }
}
