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
//   - the log still accepts appends (liveness).

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
    for (const read of this.reads) {
      const held = finalLog.get(read.index);
      if (held !== read.payload) {
        this.violate('reads-return-acknowledged-entries', `${read.node} served ${read.payload} at index ${read.index} at ${read.atMs.toFixed(1)} ms; the log holds ${held ?? 'nothing'} there (the entry was never acknowledged, or was cut)`);
      }
    }
  }
}
