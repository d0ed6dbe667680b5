// Prometheus metrics of a node (prom-client), served as text on /metrics. RecoveryMetrics'
// counters are read at scrape time, so the store's hot paths only bump plain numbers.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RecoveryMetrics } from '../recovery/index.js';

export interface ScrubMetricsView {
  readonly riskRatio: number;
  readonly latencyFactor: number;
  readonly latencyZ: { readonly fdatasync: number; readonly read: number };
  readonly segmentScoreMax: number;
  readonly rateMultiplier: number;
  readonly suspectBytes: number;
  readonly throttleShare: number;
  readonly throttleProbes: number;
  readonly throttleDecreases: number;
  readonly deficitSeconds: number;
  readonly ioErrors: number;
  readonly detections: Readonly<Record<string, number>>;
}

export class NodeMetrics {
  readonly registry = new Registry();
  readonly appendLatency: Histogram<'log'>;
  readonly appendedEntries: Counter<'log'>;
  readonly replicationFailures: Counter<'log' | 'peer'>;
  readonly segmentsBehind: Gauge<'log'>;
  readonly repairDuration: Histogram<'outcome'>;
  readonly rpcRefused: Counter<'method' | 'code'>;
  readonly rpcLimited: Counter<'method'>;
  readonly etcdMalformedValues: Counter;
  readonly scrubBytes: Counter;
  readonly scrubPassSeconds: Gauge;
  readonly underReplicatedSegments: Gauge;
  readonly replicationLag: Gauge<'log' | 'peer'>;
  readonly segmentUnavailable: Histogram;

  constructor(recovery: RecoveryMetrics, labels: { node: string; cluster: string }) {
    this.registry.setDefaultLabels(labels);
    // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...) that
    // dashboards and alert rules expect; a prefix made them wal_recovery_process_process_....
    collectDefaultMetrics({ register: this.registry });
    const counter = (name: string, help: string, read: () => number): void => {
      // A counter whose value lives in RecoveryMetrics: set at scrape time.
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    };
    counter('wal_recovery_recovery_attempts_total', 'Repair attempts (RecoveryMetrics.recovery_attempts)', () => recovery.recovery_attempts);
    counter('wal_recovery_successful_recoveries_total', 'Repairs that ended with verified data (RecoveryMetrics.successful_recoveries)', () => recovery.successful_recoveries);
    counter('wal_recovery_failed_recoveries_total', 'Repairs that did not (RecoveryMetrics.failed_recoveries)', () => recovery.failed_recoveries);
    counter('wal_recovery_corrupted_segments_total', 'Segments found damaged (RecoveryMetrics.corrupted_segments)', () => recovery.corrupted_segments);
    counter('wal_recovery_entries_lost_total', 'Entries given up by a repair and recorded as holes', () => recovery.entries_lost);
    counter('wal_recovery_entries_repaired_total', 'Entries rebuilt from a verified copy', () => recovery.entries_repaired);
    counter('wal_recovery_bytes_repaired_total', 'Bytes written by repairs', () => recovery.bytes_repaired);
    counter('wal_recovery_torn_tails_truncated_total', 'Torn tails rolled back after a crash', () => recovery.torn_tails_truncated);
    this.repairDuration = new Histogram({
      name: 'wal_recovery_repair_duration_seconds',
      help: 'Duration of each repair attempt',
      labelNames: ['outcome'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    recovery.onRepairDuration((ms, outcome) => this.repairDuration.observe({ outcome }, ms / 1000));
    this.appendLatency = new Histogram({
      name: 'wal_recovery_append_duration_seconds',
      help: 'Time from receiving an append to acknowledging it (ack quorum fsynced)',
      labelNames: ['log'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1],
      registers: [this.registry],
    });
    this.appendedEntries = new Counter({ name: 'wal_recovery_appended_entries_total', help: 'Entries acknowledged to clients by this node', labelNames: ['log'], registers: [this.registry] });
    this.replicationFailures = new Counter({ name: 'wal_recovery_replication_failures_total', help: 'Replicate calls to a member that failed', labelNames: ['log', 'peer'], registers: [this.registry] });
    this.rpcRefused = new Counter({ name: 'wal_recovery_rpc_refused_total', help: 'Calls refused for their caller: no, foreign or expired certificate (UNAUTHENTICATED) or a role not allowed (PERMISSION_DENIED)', labelNames: ['method', 'code'], registers: [this.registry] });
    this.rpcLimited = new Counter({ name: 'wal_recovery_rpc_limited_total', help: 'Calls answered RESOURCE_EXHAUSTED because their family (Read, FetchSegment, Validate, RepairSegment, ReadFrames and SegmentInfo) had its most calls in flight (src/rpc/limits.ts)', labelNames: ['method'], registers: [this.registry] });
    this.etcdMalformedValues = new Counter({ name: 'wal_recovery_etcd_malformed_values_total', help: 'Values read from etcd and left out because they did not decode (not JSON, or not a scrub score or budget)', registers: [this.registry] });
    this.scrubBytes = new Counter({ name: 'wal_recovery_scrub_bytes_total', help: 'Bytes of sealed segments re-verified by the scrubber', registers: [this.registry] });
    this.scrubPassSeconds = new Gauge({ name: 'wal_recovery_scrub_pass_seconds', help: 'Duration of the last complete scrub pass', registers: [this.registry] });
    this.replicationLag = new Gauge({ name: 'wal_recovery_replication_lag_entries', help: 'Entries committed by the writer that a member had not acknowledged at its last answer (set on the writer)', labelNames: ['log', 'peer'], registers: [this.registry] });
    this.segmentUnavailable = new Histogram({
      name: 'wal_recovery_segment_unavailable_seconds',
      help: 'From the detection of a damaged local copy to its repair (reads meanwhile go to replicas)',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
      registers: [this.registry],
    });
    this.underReplicatedSegments = new Gauge({ name: 'wal_recovery_under_replicated_segments', help: 'Sealed segments with a member gone and no node to take its place (set by the coordinator)', registers: [this.registry] });
    this.segmentsBehind = new Gauge({ name: 'wal_recovery_segments_behind', help: 'Sealed segments this node should hold but has not caught up on', labelNames: ['log'], registers: [this.registry] });
  }

  /**
   * The predictive scrubber's view (docs/SCRUBBING.md), read at scrape time: the node's risk
   * ratio, latency anomaly, the highest segment score, the rate multiplier, the signal counts.
   */
  observeScrub(read: () => ScrubMetricsView): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: (v: ScrubMetricsView) => number): void => {
      new Gauge({ name, help, registers, collect() { this.set(value(read())); } });
    };
    gauge('wal_recovery_scrub_risk_ratio', 'Damage rate of this node over the prior rate (1: the background; the latency factor included)', (v) => v.riskRatio);
    gauge('wal_recovery_scrub_latency_factor', 'Multiplier of the damage rate from fdatasync/read latency above its baseline (1: none)', (v) => v.latencyFactor);
    gauge('wal_recovery_scrub_segment_score_max', 'Highest P(undetected damage) of a segment this node holds', (v) => v.segmentScoreMax);
    gauge('wal_recovery_scrub_rate_multiplier', 'Scrub rate multiplier set by the coordinator (1: the configured rate)', (v) => v.rateMultiplier);
    gauge('wal_recovery_scrub_throttle_share', 'Share of the scrub rate the append-latency throttle allows now (0: pausing to measure the baseline)', (v) => v.throttleShare);
    new Counter({ name: 'wal_recovery_scrub_throttle_probes_total', help: 'Scrub pauses that measured the append-latency baseline', registers, collect() { this.reset(); this.inc(read().throttleProbes); } });
    new Counter({ name: 'wal_recovery_scrub_throttle_decreases_total', help: 'Times the throttle halved the scrub rate (append latency above its baseline)', registers, collect() { this.reset(); this.inc(read().throttleDecreases); } });
    gauge('wal_recovery_scrub_deficit_seconds', 'How far the current (or last) scrub pass is behind its schedule at the configured rate (sustained append load starving it)', (v) => v.deficitSeconds);
    new Counter({ name: 'wal_recovery_scrub_suspect_bytes_total', help: 'Bytes checked by suspect rescans ahead of the pass', registers, collect() { this.reset(); this.inc(read().suspectBytes); } });
    new Counter({ name: 'wal_recovery_io_errors_total', help: 'I/O errors (EIO and kin) on this node\'s disk', registers, collect() { this.reset(); this.inc(read().ioErrors); } });
    new Gauge({
      name: 'wal_recovery_scrub_latency_z',
      help: 'z-score of recent disk latency (log ms) against its baseline',
      labelNames: ['op'],
      registers,
      collect() {
        const v = read();
        this.set({ op: 'fdatasync' }, v.latencyZ.fdatasync);
        this.set({ op: 'read' }, v.latencyZ.read);
      },
    });
    new Counter({
      name: 'wal_recovery_checksum_failures_total',
      help: 'Damaged copies found, by who found them (scrub, read, open)',
      labelNames: ['source'],
      registers,
      collect() {
        this.reset();
        for (const [source, n] of Object.entries(read().detections)) this.inc({ source }, n);
      },
    });
    this.diskLatency = new Histogram({
      name: 'wal_recovery_disk_latency_seconds',
      help: 'Latency of fdatasync and read calls on this node\'s disk',
      labelNames: ['op'],
      buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 2],
      registers,
    });
  }

  diskLatency: Histogram<'op'> | undefined;

  /** Serves /metrics on host:port; resolves with the bound port. */
  async listen(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      this.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text))
        .catch((error: unknown) => res.writeHead(500).end(String(error)));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address();
    return { server, port: typeof address === 'object' && address ? address.port : port };
  }
}
