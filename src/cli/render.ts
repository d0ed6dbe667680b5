// Human-readable output of each verb: pure functions from reports to lines. --json prints the
// reports themselves instead (see commands.ts).
import { type Finding, type IndexRange, type RepairReport, type SegmentRepair, describeFinding } from '../recovery/index.js';
import type { ValidationReport } from '../wal/index.js';
import type { AppendRange, DumpRecord } from './backend.js';

type SegmentSummary = ValidationReport['segments'][number];
type HoleRecord = ValidationReport['holes'][number];

const utf8 = new TextDecoder('utf-8', { fatal: true });
// Control characters other than tab would garble a terminal or split a line.
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/** A payload as text when it is printable UTF-8, else as `base64:...` (use --json for exact bytes). */
export function payloadText(payload: Uint8Array): string {
  try {
    const text = utf8.decode(payload);
    if (!CONTROL.test(text)) return text;
  } catch {
    // not UTF-8: fall through to base64
  }
  return `base64:${Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64')}`;
}

/** `index<TAB>checksum<TAB>payload`, or `index<TAB>LOST<TAB>reason` for a hole. */
export function dumpLine(record: DumpRecord): string {
  if ('lost' in record) return `${record.index}\tLOST\t${record.reason}\n`;
  return `${record.index}\t${record.checksum}\t${payloadText(record.payload)}\n`;
}

/** NDJSON: one object per entry, payload in base64; a hole is `{ index, lost: true, reason }`. */
export function dumpJson(record: DumpRecord): object {
  if ('lost' in record) return { index: record.index, lost: true, reason: record.reason };
  return { index: record.index, timestampMs: record.timestampMs, checksum: record.checksum, payload: record.payload.toString('base64') };
}

export function appendLines(range: AppendRange | undefined, count: number): string {
  if (range === undefined) return 'appended 0 entries\n';
  return `appended ${count} ${count === 1 ? 'entry' : 'entries'}: first index ${range.firstIndex}, last index ${range.lastIndex}\n`;
}

function holeLine(hole: HoleRecord): string {
  const last = hole.firstIndex + hole.count - 1;
  const which = last > hole.firstIndex ? `entries ${hole.firstIndex}..${last}` : `entry ${hole.firstIndex}`;
  return `hole (recorded, not damage): segment ${hole.segmentId}, ${which} lost by an earlier repair`;
}

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

export function validateLines(report: ValidationReport): string {
  const lines = report.findings.map(describeFinding);
  lines.push(...report.holes.map(holeLine));
  const scanned = `${plural(report.segments.length, 'segment')}, ${report.bytesScanned} bytes scanned in ${Math.round(report.durationMs)} ms`;
  lines.push(report.ok ? `ok: log '${report.log}' is clean (${scanned})` : `damage: ${plural(report.findings.length, 'finding')} in log '${report.log}' (${scanned})`);
  return `${lines.join('\n')}\n`;
}

function ranges(list: readonly IndexRange[]): string {
  return list.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}..${r.last}`)).join(', ');
}

function actionLine(action: SegmentRepair): string {
  const target = action.segment >= 0 ? `segment ${action.segment}` : 'store';
  const parts = [`${target}: ${action.decision} ${action.outcome}: ${action.detail}`];
  if (action.repaired.length > 0) parts.push(`repaired ${ranges(action.repaired)}`);
  if (action.lost.length > 0) parts.push(`LOST ${ranges(action.lost)}`);
  if (action.truncated.length > 0) parts.push(`truncated ${ranges(action.truncated)}`);
  if (action.source !== undefined) parts.push(`from ${action.source}`);
  if (action.quarantinedAs !== undefined) parts.push(`old copy in quarantine/${action.quarantinedAs}`);
  return parts.join('; ');
}

export function repairLines(report: RepairReport): string {
  const lines: string[] = [];
  const mode = report.dryRun ? 'dry run, nothing changed' : 'applied';
  lines.push(`repair of log '${report.log}' with strategy ${report.strategy} (${mode}): ${plural(report.findings.length, 'finding')}`);
  lines.push(...report.findings.map((f: Finding) => `  found ${describeFinding(f)}`));
  lines.push(...report.actions.map((a) => `  ${report.dryRun ? 'would do' : 'did'} ${actionLine(a)}`));
  const verb = report.dryRun ? 'would be' : 'were';
  lines.push(`entries repaired: ${report.entriesRepaired}, lost: ${report.entriesLost}, truncated: ${report.entriesTruncated} (${verb})`);
  if (report.remaining.length === 0) lines.push('ok: the store validates clean');
  else if (report.dryRun) lines.push(`not repaired (dry run): ${plural(report.remaining.length, 'finding')} remain${report.remaining.length === 1 ? 's' : ''}`);
  else {
    lines.push(...report.remaining.map((f) => `  remaining ${describeFinding(f)}`));
    lines.push(`not repaired: ${plural(report.remaining.length, 'finding')} remain${report.remaining.length === 1 ? 's' : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

function optional(value: number | string | undefined): string {
  return value === undefined ? '-' : String(value);
}

export function segmentLine(s: SegmentSummary): string {
  const range = s.firstIndex === undefined ? '-' : `${s.firstIndex}..${optional(s.lastIndex)}`;
  return [String(s.segment).padStart(8), s.state.padEnd(7), range.padEnd(21), optional(s.indexCount).padStart(8), optional(s.byteLength).padStart(11), optional(s.aggregateChecksum).padEnd(16), String(s.holes).padStart(5)].join('  ');
}

export function inspectLines(report: ValidationReport, segments: readonly SegmentSummary[]): string {
  const header = ['segment'.padStart(8), 'state'.padEnd(7), 'indices'.padEnd(21), 'count'.padStart(8), 'bytes'.padStart(11), 'aggregate'.padEnd(16), 'holes'.padStart(5)].join('  ');
  const lines = [`log '${report.log}' in ${report.dataDir}: ${plural(report.segments.length, 'segment')}`, header, ...segments.map(segmentLine)];
  const shown = new Set(segments.map((s) => s.segment));
  lines.push(...report.findings.filter((f) => f.segment === undefined || shown.has(f.segment)).map((f) => `  ${describeFinding(f)}`));
  return `${lines.join('\n')}\n`;
}

export interface StatusSummary {
  readonly log: string;
  readonly dataDir: string;
  readonly ok: boolean;
  readonly segmentCount: number;
  readonly firstIndex: number | null;
  readonly lastIndex: number | null;
  readonly holeCount: number;
  readonly findingCount: number;
}

export function statusOf(report: ValidationReport): StatusSummary {
  const first = report.segments[0];
  const last = report.segments[report.segments.length - 1];
  return {
    log: report.log,
    dataDir: report.dataDir,
    ok: report.ok,
    segmentCount: report.segments.length,
    firstIndex: first?.firstIndex ?? null,
    lastIndex: last?.lastIndex ?? null,
    holeCount: report.holes.reduce((n, h) => n + h.count, 0),
    findingCount: report.findings.length,
  };
}

export function statusLines(s: StatusSummary): string {
  const range = s.firstIndex === null ? 'empty' : `indices ${s.firstIndex}..${optional(s.lastIndex ?? undefined)}`;
  const health = s.ok ? 'ok' : `damaged (${plural(s.findingCount, 'finding')}; run validate)`;
  return `log '${s.log}' in ${s.dataDir}: ${plural(s.segmentCount, 'segment')}, ${range}, ${plural(s.holeCount, 'lost entry', 'lost entries')}; ${health}\n`;
}

/** The fields of a node's ClusterStatus that status prints. */
export interface ClusterStatusLike {
  readonly cluster: string;
  readonly node: string;
  readonly coordinator: string;
  readonly members: ReadonlyArray<{ id: string; address: string }>;
  readonly logs: ReadonlyArray<{
    log: string;
    writer: string;
    writer_epoch: number;
    committed_index: number;
    replication_factor: number;
    ack_quorum: number;
    segments: ReadonlyArray<{ segment_id: number; state: string; ensemble: readonly string[]; first_index: number; last_index: number; aggregate: string }>;
  }>;
}

export function clusterStatusLines(s: ClusterStatusLike): string {
  const lines = [`cluster '${s.cluster}' as node ${s.node} sees it: ${plural(s.members.length, 'member')}, coordinator ${s.coordinator || '(none)'}`];
  for (const m of s.members) lines.push(`  member ${m.id} at ${m.address}`);
  for (const l of s.logs) {
    lines.push(`log '${l.log}': writer ${l.writer || '(none)'} (epoch ${l.writer_epoch}), committed up to ${l.committed_index} (as this node knows it), replication ${l.replication_factor}, ack quorum ${l.ack_quorum}`);
    for (const seg of l.segments) {
      const range = seg.last_index >= seg.first_index ? `${seg.first_index}..${seg.last_index}` : `from ${seg.first_index}`;
      lines.push(`  segment ${seg.segment_id} ${seg.state.padEnd(10)} ${range.padEnd(22)} on ${seg.ensemble.join(',')}${seg.aggregate ? `  ${seg.aggregate}` : ''}`);
    }
  }
  return lines.join('\n') + '\n';
}
