// Renders the fault matrix (test/faults/matrix.faults.ts): a plain-text table for the console and
// the Markdown page docs/FAULTS.md. Rows: file and region; columns: fault; cells: the outcome and
// the time from the injection to the verified repair.
export const FAULTS = ['bit flip', 'zeroed 4 KiB block', 'random 4 KiB block', 'truncate to half', 'delete', 'older copy', 'EIO on read'] as const;
export type Fault = (typeof FAULTS)[number];

export interface Cell {
  readonly row: string;
  readonly fault: Fault;
  readonly outcome: 'repaired' | 'FAILED' | 'not injectable' | 'not run' | 'n/a';
  /** Injection to verified repair (repaired), or to giving up (FAILED). */
  readonly ms: number;
  /** How it was detected (repaired), why it failed, or why it is not injected. */
  readonly detail: string;
}

function short(cell: Cell | undefined): string {
  if (!cell) return '';
  switch (cell.outcome) {
    case 'repaired':
      return `repaired ${(cell.ms / 1000).toFixed(1)} s (${cell.detail})`;
    case 'FAILED':
      return `FAILED after ${(cell.ms / 1000).toFixed(1)} s`;
    case 'not injectable':
      return 'not injectable';
    case 'not run':
      return 'not run';
    case 'n/a':
      return '—';
  }
}

export function renderMatrix(cells: readonly Cell[], rows: readonly string[], notes: readonly string[] = []): { text: string; markdown: string } {
  const at = (row: string, fault: Fault): Cell | undefined => cells.find((c) => c.row === row && c.fault === fault);
  const header = ['file / region', ...FAULTS];
  const body = rows.map((row) => [row, ...FAULTS.map((fault) => short(at(row, fault)))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string => r.map((v, i) => v.padEnd(widths[i] ?? 0)).join(' | ');
  const count = (outcome: Cell['outcome']): number => cells.filter((c) => c.outcome === outcome).length;
  const totals = `${count('repaired')} repaired, ${count('FAILED')} failed, ${count('not injectable')} not injectable, ${count('not run')} not run, ${count('n/a')} not applicable`;
  const text = [line(header), widths.map((w) => '-'.repeat(w)).join('-+-'), ...body.map(line), '', totals].join('\n');
  const failures = cells.filter((c) => c.outcome === 'FAILED').map((c) => `- ${c.row} × ${c.fault}: ${c.detail}`);
  const notRun = cells.find((c) => c.outcome === 'not run');
  const eio = cells.find((c) => c.outcome === 'not injectable');
  const markdown = [
    '# Fault matrix',
    '',
    'Written by `npm run test:faults` (`test/faults/matrix.faults.ts`); do not edit by hand.',
    '',
    'One node of a 3-node cluster (real etcd, real node processes on 127.0.0.1, replication factor 3,',
    'ack quorum 2, one local backup copy, scrub every 300 ms at its full rate: throttle off) gets one fault per cell in one file, while',
    'a workload keeps appending to both logs. A cell is **repaired** when the node found the damage by',
    'itself (scrubber, a read through it, or its start after a kill -9 for files read only at open) and',
    'its file is again byte-identical to the healthy replicas\' (for CATALOG: `validate` of the node is',
    'clean; for EPOCH: the restarted node refuses a Fence below the epoch it had been fenced at). The',
    'time is from the injection to that check passing (a restart included). After all cells, every',
    'acknowledged entry of both logs reads back with its bytes from every node, the sealed copies agree,',
    'and the two other nodes found no damage of their own.',
    '',
    `Totals: ${totals}.`,
    '',
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...body.map((r) => `| ${r.join(' | ')} |`),
    '',
    '— : the fault is file-level (it has its own row) or has no meaning there.',
    '',
    ...(eio ? [`**EIO on read is not injectable** on real files here: it ${eio.detail}.`, ''] : []),
    ...(notRun ? [`**not run**: ${notRun.detail}.`, ''] : []),
    ...notes.flatMap((note) => [note, '']),
    ...(failures.length > 0 ? ['## Failed cells', '', ...failures, ''] : []),
  ].join('\n');
  return { text, markdown };
}
