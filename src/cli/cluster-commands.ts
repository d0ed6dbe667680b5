// validate and repair against a live cluster (--target): they run on the nodes, through
// AdminService, and print what the nodes report.
import { AdminClient, type ValidateMessageView, repairResultFromWire, validateMessageFromWire } from '../rpc/index.js';
import type { RepairStrategy } from '../recovery/index.js';
import { type Endpoint, transportOf } from './backend.js';
import type { CommandContext } from './commands.js';
import { EXIT_DAMAGE, EXIT_OK, type ExitCode, UsageError } from './exit.js';

type ClusterEndpoint = Extract<Endpoint, { kind: 'cluster' }>;

function ranges(list: ReadonlyArray<{ first: number; last: number }>): string {
  return list.map((r) => (r.first === r.last ? `${r.first}` : `${r.first}..${r.last}`)).join(', ');
}

/** A cluster finding as --json prints it: the local Finding's fields, and the node whose copy it is. */
function findingOf(m: ValidateMessageView): ClusterFinding {
  const { done: _done, segmentsChecked: _segments, bytesChecked: _bytes, ...finding } = m;
  return finding;
}

type ClusterFinding = Omit<ValidateMessageView, 'done' | 'segmentsChecked' | 'bytesChecked'>;

export async function runClusterValidate(ctx: CommandContext, endpoint: ClusterEndpoint, node: string): Promise<ExitCode> {
  const client = new AdminClient(endpoint.target.text, await transportOf(endpoint));
  const findings: ClusterFinding[] = [];
  let summary = { segmentsChecked: 0, bytesChecked: 0 };
  try {
    for await (const wire of client.validate(endpoint.log, node)) {
      const m = validateMessageFromWire(wire);
      if (m.done) {
        summary = { segmentsChecked: m.segmentsChecked, bytesChecked: m.bytesChecked };
        continue;
      }
      findings.push(findingOf(m));
      if (!ctx.json) {
        const where = [`node ${m.node}`, `segment ${m.segment}`, ...(m.entryIndex ? [`entry ${m.entryIndex}${m.indexCount > 1 ? `..${m.entryIndex + m.indexCount - 1}` : ''}`] : []), ...(m.offsetBytes ? [`offset ${m.offsetBytes}`] : [])];
        await ctx.out.write(`${m.kind} (${where.join(', ')}): ${m.detail}\n`);
      }
    }
  } finally {
    client.close();
  }
  if (ctx.json) await ctx.out.json({ log: endpoint.log, node: node || '*', ok: findings.length === 0, findings, ...summary });
  else await ctx.out.write(`${findings.length === 0 ? 'ok' : `damage: ${findings.length} finding(s)`}: log '${endpoint.log}' on ${node || 'every live member'} (${summary.segmentsChecked} sealed segment copies, ${summary.bytesChecked} bytes checked)\n`);
  return findings.length === 0 ? EXIT_OK : EXIT_DAMAGE;
}

export async function runClusterRepair(ctx: CommandContext, endpoint: ClusterEndpoint, o: { segment?: number; node?: string; strategy: RepairStrategy; strategyGiven?: boolean; dryRun: boolean }): Promise<ExitCode> {
  if (o.segment === undefined) throw new UsageError('repair --target needs --segment ID (find damaged segments with validate --target)');
  const client = new AdminClient(endpoint.target.text, await transportOf(endpoint));
  try {
    // No --strategy: none is sent, and each node repairs with its own --repair-strategy.
    const strategy = o.strategyGiven === false ? undefined : o.strategy;
    const wire = await client.repairSegment({ log: endpoint.log, segmentId: o.segment, node: o.node ?? '', ...(strategy !== undefined ? { strategy } : {}), dryRun: o.dryRun });
    const response = { log: endpoint.log, segment: o.segment, strategy: strategy ?? null, dryRun: o.dryRun, results: wire.results.map((r) => repairResultFromWire(r, o.segment as number)) };
    if (ctx.json) await ctx.out.json(response);
    else {
      const lines = [`repair of segment ${o.segment} of log '${endpoint.log}' with ${strategy === undefined ? "each node's own strategy" : `strategy ${strategy}`}${o.dryRun ? ' (dry run)' : ''}:`];
      for (const r of response.results) {
        const parts = [`${r.decision} ${r.outcome}`, r.detail];
        if (r.repaired.length > 0) parts.push(`repaired ${ranges(r.repaired)}${r.source ? ` from ${r.source}` : ''}`);
        if (r.lost.length > 0) parts.push(`LOST ${ranges(r.lost)}`);
        if (r.truncated.length > 0) parts.push(`TRUNCATED ${ranges(r.truncated)}`);
        lines.push(`  node ${r.node}: ${parts.join('; ')}`);
      }
      await ctx.out.write(lines.join('\n') + '\n');
    }
    const ok = response.results.every((r) => r.outcome === 'done' || r.outcome === 'planned');
    return ok ? EXIT_OK : EXIT_DAMAGE;
  } finally {
    client.close();
  }
}
