// A progress bar for long work (validate, repair), drawn on stderr only when it is a terminal:
// on a pipe or a file nothing of it is written, so logs and captured output stay clean.

export interface ProgressStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(chunk: string): boolean;
}

export interface Progress {
  /** The callback to hand to validateStore / repairDataDir, or undefined when not drawing. */
  readonly onProgress: ((bytesDone: number, bytesTotal: number) => void) | undefined;
  /** Clears the bar so the next line starts clean. */
  finish(): void;
}

/** Redraws at most this often; a scan reports far more often than a terminal needs. */
const REDRAW_INTERVAL_MS = 100;
const BAR_WIDTH_MAX = 40;
const BAR_WIDTH_MIN = 10;

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(1);
}

export function renderBar(label: string, bytesDone: number, bytesTotal: number, columns: number): string {
  const fraction = bytesTotal > 0 ? Math.min(1, Math.max(0, bytesDone / bytesTotal)) : 1;
  const text = ` ${Math.floor(fraction * 100).toString().padStart(3)}% ${mib(bytesDone)}/${mib(bytesTotal)} MiB`;
  const width = Math.max(BAR_WIDTH_MIN, Math.min(BAR_WIDTH_MAX, columns - label.length - text.length - 4));
  const filled = Math.round(fraction * width);
  return `${label} [${'#'.repeat(filled)}${' '.repeat(width - filled)}]${text}`;
}

export function createProgress(stream: ProgressStream, label: string, now: () => number = Date.now): Progress {
  if (stream.isTTY !== true) return { onProgress: undefined, finish: () => undefined };
  let drawnAtMs = Number.NEGATIVE_INFINITY;
  let drawn = false;
  const columns = (): number => stream.columns ?? 80;
  return {
    onProgress: (bytesDone, bytesTotal) => {
      const t = now();
      if (t - drawnAtMs < REDRAW_INTERVAL_MS && bytesDone < bytesTotal) return;
      drawnAtMs = t;
      drawn = true;
      stream.write(`\r${renderBar(label, bytesDone, bytesTotal, columns())}\x1b[K`);
    },
    finish: () => {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}
