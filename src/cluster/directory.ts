// Segment metadata of each log in etcd (replication's SegmentDirectory), updated by CAS.
import { type LeaderGuard, type SegmentDirectory, type SegmentMeta, type LogMeta, parseSegmentMeta, parseLogMeta } from '../replication/index.js';
import type { ClusterMetadata, KeyGuard, Versioned } from './metadata.js';

export class EtcdSegmentDirectory implements SegmentDirectory {
  constructor(private readonly meta: ClusterMetadata) {}

  async list(log: string): Promise<Array<{ meta: SegmentMeta; modRevision: number }>> {
    const records = await this.meta.list(this.meta.keys.segmentsPrefix(log), parseSegmentMeta);
    return records.map((r) => ({ meta: r.value, modRevision: r.modRevision })).sort((a, b) => a.meta.segmentId - b.meta.segmentId);
  }

  async create(meta: SegmentMeta, leader?: LeaderGuard, previousModRevision?: number): Promise<number | undefined> {
    const key = this.meta.keys.segment(meta.log, meta.segmentId);
    const guards: KeyGuard[] = [];
    if (leader) guards.push({ key: leader.key, createRevision: leader.epoch });
    if (previousModRevision !== undefined) guards.push({ key: this.meta.keys.segment(meta.log, meta.segmentId - 1), modRevision: previousModRevision });
    return guards.length === 0 ? this.meta.create(key, meta) : this.meta.createWhile(key, meta, guards);
  }

  async update(meta: SegmentMeta, modRevision: number): Promise<number | undefined> {
    return this.meta.compareAndSwap(this.meta.keys.segment(meta.log, meta.segmentId), meta, modRevision);
  }

  async logMeta(log: string): Promise<Versioned<LogMeta> | undefined> {
    return this.meta.get(this.meta.keys.logMeta(log), parseLogMeta);
  }

  async createLog(meta: LogMeta): Promise<boolean> {
    return (await this.meta.create(this.meta.keys.logMeta(meta.log), meta)) !== undefined;
  }

  async listLogs(): Promise<LogMeta[]> {
    const all = await this.meta.list(this.meta.keys.logsPrefix(), (raw) => raw);
    const logs: LogMeta[] = [];
    for (const record of all) {
      if (!record.key.endsWith('/meta')) continue;
      try {
        logs.push(parseLogMeta(record.value));
      } catch {
        // a malformed record is skipped (and reported by status), never half-used
      }
    }
    return logs;
  }
}
