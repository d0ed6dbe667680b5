// Writing to stdout: buffered into chunks (a dump writes one line per entry; one syscall each
// would cost more than the reads), with backpressure (a dump of a large log must not sit in
// memory), and a clean stop when the reader goes away (`dump | head`).
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { OutputClosedError } from './exit.js';

/** Text gathered before it is handed to the stream. */
const CHUNK_CHARS_MAX = 64 * 1024;

export class Output {
  private closedBy: unknown;
  private pending: string[] = [];
  private pendingChars = 0;

  constructor(private readonly stream: Writable) {
    // Stays attached for the life of the process: an EPIPE after the verb ended must not crash it.
    stream.on('error', (error: unknown) => {
      this.closedBy ??= error;
    });
  }

  /** Queues text; hands a full chunk to the stream, waiting while its buffer is full. */
  async write(text: string): Promise<void> {
    if (this.closedBy !== undefined) throw new OutputClosedError({ cause: this.closedBy });
    this.pending.push(text);
    this.pendingChars += text.length;
    if (this.pendingChars >= CHUNK_CHARS_MAX) await this.push();
  }

  /** One JSON document, pretty-printed (reports) or on one line (NDJSON records). */
  async json(value: unknown, oneLine = false): Promise<void> {
    await this.write(`${JSON.stringify(value, undefined, oneLine ? undefined : 2)}\n`);
  }

  /** Hands everything queued to the stream and waits until it has taken it, so exit loses nothing. */
  async flush(): Promise<void> {
    await this.push();
    if (this.closedBy === undefined && this.stream.writableNeedDrain) await this.drained();
  }

  private async push(): Promise<void> {
    if (this.pending.length === 0) return;
    const chunk = this.pending.join('');
    this.pending = [];
    this.pendingChars = 0;
    if (!this.stream.write(chunk)) await this.drained();
    if (this.closedBy !== undefined) throw new OutputClosedError({ cause: this.closedBy });
  }

  private async drained(): Promise<void> {
    // once() rejects on 'error' (the listener above has recorded it, and push() reports it) and on
    // abort, which removes the listeners of the event that did not happen.
    const done = new AbortController();
    try {
      await Promise.race([once(this.stream, 'drain', { signal: done.signal }), once(this.stream, 'close', { signal: done.signal })]).catch(() => undefined);
    } finally {
      done.abort();
    }
  }
}
