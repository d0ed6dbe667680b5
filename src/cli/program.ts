// The command line: verbs and options (commander), and runCli, which parses, runs one verb and
// returns its exit code. It never throws and never exits the process; main.ts sets exitCode.
import type { Writable } from 'node:stream';
import { Command, InvalidArgumentError, Option } from 'commander';
import pino, { type Logger } from 'pino';
import { RECOVERY_CONFIG_DEFAULTS, REPAIR_STRATEGIES, type RepairStrategy } from '../recovery/index.js';
import { RPC_LIMIT_NAMES } from '../rpc/index.js';
import { endpointOf } from './backend.js';
import { type CommandContext, runAppend, runDump, runInspect, runRepair, runStatus, runValidate } from './commands.js';
import { EXIT_OK, type ExitCode, PROGRAM_NAME, exitCodeOf, formatError, isSilent } from './exit.js';
import { type Target, integerIn, parseTarget } from './options.js';
import { Output } from './output.js';
import type { ProgressStream } from './progress.js';
import { type NodeVerbOptions, runNode } from './server.js';
import { runPlayground } from './playground.js';
import { makeCerts } from './certs.js';

export interface CliIo {
  readonly stdin: AsyncIterable<Buffer | string>;
  readonly stdout: Writable;
  readonly stderr: ProgressStream & Writable;
}

/** Limits of numeric options; the store checks its own ranges again when it opens. */
const INDEX_OPTION_MAX = Number.MAX_SAFE_INTEGER;
const SEGMENT_BYTES_OPTION_MAX = 1024 * 1024 * 1024;
const BACKUPS_OPTION_MAX = 255;
const SEGMENT_ID_OPTION_MAX = Number.MAX_SAFE_INTEGER;
const THREADS_OPTION_MAX = 64;

const BACKUPS_EXPECTED_HELP = 'local backup copies each sealed segment should have (default: what the store recorded when it was created)';

interface CommonOptions {
  readonly dataDir?: string;
  readonly backups?: number;
  readonly target?: Target;
  readonly log?: string;
  readonly json?: boolean;
  readonly verbose?: boolean;
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly insecure?: boolean;
}

const HELP_AFTER = `
Exit codes: 0 ok; 1 damage found or not repaired; 2 usage or environment error.
Every verb takes --data-dir DIR (a store on this machine) and --json (machine-readable output).
--target HOST:PORT (a cluster node, with --log NAME) works for append, dump, status, validate
(--node ID) and repair (--segment ID [--node ID]). Server verbs: node, playground.`;

const DUMP_HELP_AFTER = `
Text output: one line per entry, "index<TAB>checksum<TAB>payload"; a payload that is not
printable UTF-8 is shown as "base64:..."; a hole (entry lost by a repair) is
"index<TAB>LOST<TAB>reason".
--json output is NDJSON: one object per line, {"index","timestampMs","checksum","payload"} with
the payload in base64, or {"index","lost":true,"reason"} for a hole.
Opening the store recovers it first (a torn tail is rolled back); damage that needs a repair
strategy makes dump exit 1 without output: run validate, then repair. Dump takes the store's
lock while it runs and leaves the open segment open.`;

/** --tls-ca, --tls-cert, --tls-key, --tls-revoked (or WAL_TLS_CA, WAL_TLS_CERT, WAL_TLS_KEY, WAL_TLS_REVOKED) and --insecure. */
function addTlsOptions(cmd: Command, prefix: string): Command {
  return cmd
    .option('--tls-ca <file>', `${prefix}the cluster CA certificate (PEM; or WAL_TLS_CA)`)
    .option('--tls-cert <file>', `${prefix}this caller's certificate (PEM; or WAL_TLS_CERT)`)
    .option('--tls-key <file>', `${prefix}this caller's key (PEM; or WAL_TLS_KEY)`)
    .option('--tls-revoked <file>', `${prefix}revoked certificates, a serial or SHA-256/SHA-1 fingerprint a line (README, Security), re-read when it changes: refused as callers and as servers (or WAL_TLS_REVOKED)`)
    .option('--insecure', `${prefix}plaintext, no TLS: anyone on the network may read and call (or WAL_INSECURE=1); TLS files or this are required`);
}

function addCommon(cmd: Command, acceptsTarget: boolean, backupsHelp?: string): Command {
  cmd.option('--data-dir <dir>', 'the store directory');
  if (backupsHelp !== undefined) cmd.option('--backups <n>', backupsHelp, integerIn(0, BACKUPS_OPTION_MAX));
  if (acceptsTarget) {
    cmd.option('--target <host:port>', 'a cluster node, instead of --data-dir', parseTarget);
    cmd.option('--log <name>', 'with --target: the log (default "default")');
    addTlsOptions(cmd, 'with --target: ');
  }
  return cmd.option('--json', 'machine-readable output').option('--verbose', 'logs on stderr (pino JSON) and stack traces of errors');
}

/**
 * Without --verbose: append and dump (which open the store, and so may recover it) log warnings,
 * so an operator sees a torn tail rolled back or damage repaired on open. Validate, repair,
 * inspect and status log nothing: their report already names every finding and action.
 */
function loggerFor(verbose: boolean, quietLevel: 'warn' | 'silent', stderr: CliIo['stderr']): Logger {
  return pino({ level: verbose ? 'debug' : quietLevel, base: { component: PROGRAM_NAME } }, stderr);
}

export function buildProgram(io: CliIo, setCode: (code: ExitCode) => void, out: Output): Command {
  const context = (opts: CommonOptions, quietLevel: 'warn' | 'silent' = 'silent'): CommandContext => ({
    out,
    stdin: io.stdin,
    stderr: io.stderr,
    logger: loggerFor(opts.verbose === true, quietLevel, io.stderr),
    json: opts.json === true,
    backupRetentionCount: opts.backups,
  });
  const program = new Command(PROGRAM_NAME)
    .description('A write-ahead log that detects and repairs damage.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      outputError: () => undefined, // runCli prints every error itself, as one line
    })
    .addHelpText('after', HELP_AFTER);

  addCommon(program.command('append').description('append one entry per line of stdin; print the first and last index'), true, 'local backup copies kept of each sealed segment (default 1)')
    .option('--segment-bytes <n>', 'segment roll size of a new store', integerIn(1, SEGMENT_BYTES_OPTION_MAX))
    .action(async (opts: CommonOptions & { segmentBytes?: number }) => {
      const options = opts.segmentBytes !== undefined ? { segmentBytesMax: opts.segmentBytes } : {};
      setCode(await runAppend(context(opts, 'warn'), endpointOf(opts), options));
    });

  addCommon(program.command('dump').alias('read').description('print entries (verified) in index order'), true, BACKUPS_EXPECTED_HELP)
    .option('--from <index>', 'first index to print', integerIn(1, INDEX_OPTION_MAX))
    .option('--to <index>', 'last index to print', integerIn(1, INDEX_OPTION_MAX))
    .addHelpText('after', DUMP_HELP_AFTER)
    .action(async (opts: CommonOptions & { from?: number; to?: number }, cmd: Command) => {
      if (opts.from !== undefined && opts.to !== undefined && opts.from > opts.to) cmd.error(`--from ${opts.from} is after --to ${opts.to}`);
      const range = { ...(opts.from !== undefined ? { fromIndex: opts.from } : {}), ...(opts.to !== undefined ? { toIndex: opts.to } : {}) };
      setCode(await runDump(context(opts, 'warn'), endpointOf(opts), range));
    });

  addCommon(program.command('validate').description('read every file and report damage (read-only); exit 1 when damaged'), true, BACKUPS_EXPECTED_HELP)
    .option('--node <id>', 'with --target: only this node (default: every live member)')
    .option('--threads <n>', 'data directory: worker threads that read and hash segments (default 1; each adds ~8 MiB; used from 16 MiB and 2 segments up)', integerIn(1, THREADS_OPTION_MAX))
    .action(async (opts: CommonOptions & { node?: string; threads?: number }) => setCode(await runValidate(context(opts), endpointOf(opts), opts.node ?? '', opts.threads)));

  addCommon(program.command('repair').description('repair damage with a strategy; exit 0 when the store then validates clean'), true, BACKUPS_EXPECTED_HELP)
    .addOption(new Option('--strategy <name>', 'what to do about damage a verified copy cannot fix').choices(REPAIR_STRATEGIES).default(RECOVERY_CONFIG_DEFAULTS.repairStrategy))
    .option('--dry-run', 'report what would be done; change nothing (exit 1 while damage remains)')
    .option('--segment <id>', 'with --target: the sealed segment to repair', integerIn(1, SEGMENT_ID_OPTION_MAX))
    .option('--node <id>', 'with --target: only this node\'s copy (default: every member whose copy is damaged)')
    // Commander's choices() is the one parse of the strategy at this edge: opts.strategy is one of REPAIR_STRATEGIES.
    .action(async (opts: CommonOptions & { strategy: RepairStrategy; dryRun?: boolean; segment?: number; node?: string }, command: Command) => {
      // With --target and no --strategy, each node repairs with its own --repair-strategy.
      const strategyGiven = command.getOptionValueSource('strategy') !== 'default';
      const options = { strategy: opts.strategy, strategyGiven, dryRun: opts.dryRun === true, ...(opts.segment !== undefined ? { segment: opts.segment } : {}), ...(opts.node !== undefined ? { node: opts.node } : {}) };
      setCode(await runRepair(context(opts), endpointOf(opts), options));
    });

  addCommon(program.command('inspect').description('list segments: state, index range, size, checksum (exit 0 whatever their state)'), false)
    .option('--segment <id>', 'show only this segment (exit 2 if there is none)', integerIn(1, SEGMENT_ID_OPTION_MAX))
    .action(async (opts: CommonOptions & { segment?: number }) => {
      setCode(await runInspect(context(opts), endpointOf(opts), opts.segment !== undefined ? { segment: opts.segment } : {}));
    });

  addCommon(program.command('status').description('one-line summary of the store, or with --target the cluster: members, writers, segments'), true)
    .option('--all-logs', 'with --target: every log, not only --log')
    .action(async (opts: CommonOptions & { allLogs?: boolean }) => setCode(await runStatus(context(opts), endpointOf(opts), opts.allLogs === true)));

  const nodeCommand = program
    .command('node')
    .description('run one cluster node until SIGINT or SIGTERM; prints {"node","target","metrics","pid"} once serving')
    .requiredOption('--id <id>', 'node id, unique in the cluster (A-Z a-z 0-9 . _ -)')
    .requiredOption('--data-dir <dir>', 'where this node keeps its logs')
    .requiredOption('--listen <host:port>', 'gRPC address (port 0: any free port)')
    .requiredOption('--etcd <urls>', 'etcd endpoints, comma-separated (http://127.0.0.1:2379, or https:// with --etcd-ca)')
    .option('--etcd-ca <file>', 'TLS to etcd: the CA of etcd\'s server certificate (PEM; or WAL_ETCD_CA)')
    .option('--etcd-cert <file>', 'TLS to etcd: this node\'s client certificate, for etcd\'s --client-cert-auth (PEM; or WAL_ETCD_CERT)')
    .option('--etcd-key <file>', 'TLS to etcd: its key (PEM; or WAL_ETCD_KEY)')
    .option('--etcd-insecure', 'plaintext etcd under a TLS node (or WAL_ETCD_INSECURE=1): whoever reaches etcd can rewrite the cluster\'s records')
    .option('--cluster <name>', 'cluster name: the etcd key prefix (default "default")')
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics here')
    .option('--segment-bytes <n>', 'segment roll size of logs this node creates', integerIn(4096, SEGMENT_BYTES_OPTION_MAX))
    .option('--replication <n>', 'replication factor of logs this node creates (default 3)', integerIn(1, 15))
    .option('--logs-max <n>', 'logs the cluster may hold before this node refuses to create another (default 1000)', integerIn(1, 1_000_000))
    .option('--ack-quorum <n>', 'ack quorum of logs this node creates (default a majority)', integerIn(1, 15))
    .option('--backups <n>', 'local backup copies of each sealed segment (default 0: replicas are the redundancy)', integerIn(0, BACKUPS_OPTION_MAX))
    .addOption(new Option('--repair-strategy <name>', 'what to do about a damaged copy no replica can rebuild').choices(REPAIR_STRATEGIES).default(RECOVERY_CONFIG_DEFAULTS.repairStrategy))
    .option('--scrub-bytes-per-second <n>', 'background scrub rate of sealed segments (0: off; default 16 MiB/s)', integerIn(0, 4 * 1024 * 1024 * 1024))
    .option('--scrub-interval-ms <n>', 'pause between scrub passes (default 30000)', integerIn(100, 86_400_000))
    .option('--no-scrub-throttle', 'scrub at the full rate even while appends run (default: scrubbing yields to appends)')
    .option('--gone-after-ms <n>', 'a member missing this long is replaced in the ensembles of sealed segments (default 30000)', integerIn(0, 86_400_000))
    .option('--rpc-limit <name=n>', `a limit on calls served at once, repeatable (README, Security: Bounds): ${RPC_LIMIT_NAMES.join(', ')}`, (value: string, previous: string[] = []) => [...previous, value])
    .option('--otlp-endpoint <url>', 'send OpenTelemetry traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (default: tracing off)')
    .option('--trace-sample-ratio <r>', 'share of new traces sampled when tracing is on (default 0.01)', ratioIn01)
    .option('--verbose', 'debug logs');
  addTlsOptions(nodeCommand, '')
    .action(async (opts: NodeVerbOptions) => setCode(await runNode(opts, (line) => out.write(line).then(() => out.flush()))));

  program
    .command('playground')
    .description('run a local cluster on 127.0.0.1: etcd (from PATH) and N nodes, with TLS (or --insecure), until SIGINT or SIGTERM')
    .option('--nodes <n>', 'how many nodes (default 3)', integerIn(1, 9), 3)
    .option('--dir <dir>', 'where etcd, the nodes and their logs keep their files (default: a new temp dir)')
    .option('--segment-bytes <n>', 'segment roll size of logs the cluster creates', integerIn(4096, SEGMENT_BYTES_OPTION_MAX))
    .option('--json', 'print one line {"etcd","nodes":[{"id","target","pid","dataDir","metrics"}],"tls":{"ca","admin":{"cert","key"},"client":{"cert","key"}}} once all nodes serve ("tls" absent with --insecure)')
    .option('--insecure', 'plaintext gRPC and etcd, no certificates (default: TLS everywhere, certificates made with openssl in <dir>/certs)')
    .option('--pin-ports', 'the ports of docker-compose.yml (etcd 2379/2380, nodes 7001.., metrics 9101..) instead of free ones; refused if one is taken')
    .action(async (opts: { nodes: number; dir?: string; segmentBytes?: number; json?: boolean; insecure?: boolean; pinPorts?: boolean }) => {
      const options = { nodes: opts.nodes, json: opts.json === true, insecure: opts.insecure === true, pinPorts: opts.pinPorts === true, ...(opts.dir !== undefined ? { dir: opts.dir } : {}), ...(opts.segmentBytes !== undefined ? { segmentBytes: opts.segmentBytes } : {}) };
      setCode(await runPlayground(options, (text) => out.write(text).then(() => out.flush())));
    });

  program
    .command('certs')
    .description('make a CA and certificates for a secured cluster (needs openssl): one per node (role peer), client, admin; and an etcd CA with a server certificate for etcd and a client certificate for the nodes; prints where they are')
    .requiredOption('--out <dir>', 'where to write the PEM files')
    .requiredOption('--nodes <ids>', 'node ids, comma-separated (each certificate is valid for 127.0.0.1, localhost and the id)')
    .option('--hosts <names>', 'more host names or IPv4 addresses every node certificate is valid for, comma-separated')
    .option('--days <n>', 'validity in days (default 365)', integerIn(1, 36_500))
    .option('--keep-existing', 'keep the certificates (and CAs) already in --out; make only what is missing')
    .action(async (opts: { out: string; nodes: string; hosts?: string; days?: number; keepExisting?: boolean }) => {
      const list = (text: string): string[] => text.split(',').map((s) => s.trim()).filter((s) => s !== '');
      const layout = await makeCerts({ outDir: opts.out, nodes: list(opts.nodes), keepExisting: opts.keepExisting === true, ...(opts.hosts !== undefined ? { hosts: list(opts.hosts) } : {}), ...(opts.days !== undefined ? { days: opts.days } : {}) });
      await out.write(`${JSON.stringify(layout)}\n`);
      await out.flush();
      setCode(EXIT_OK);
    });

  return program;
}

/** Parses argv (without node and the script), runs one verb, returns the exit code. Never throws. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  let code: ExitCode = EXIT_OK;
  const out = new Output(io.stdout);
  try {
    await buildProgram(io, (c) => (code = c), out).parseAsync([...argv], { from: 'user' });
    await out.flush();
  } catch (error) {
    // What the verb printed before it failed (entries dumped up to the damage) comes first.
    await out.flush().catch(() => undefined);
    // --verbose is read from argv directly: the error may be that parsing failed.
    const verbose = argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length).includes('--verbose');
    if (!isSilent(error)) io.stderr.write(formatError(error, verbose));
    code = exitCodeOf(error);
  }
  // The Output keeps listening for EPIPE: a reader closing early must not crash the exit.
  return code;
}

/** A share in [0, 1] (--trace-sample-ratio). */
function ratioIn01(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError('must be a number from 0 to 1');
  return n;
}
