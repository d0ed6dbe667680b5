#!/usr/bin/env node
// Container health check of a wal-recovery node over the standard gRPC health service
// (grpc.health.v1.Health/Check). Exit 0 when the node answers SERVING, 1 otherwise.
//
//   node cluster/healthcheck.mjs [HOST:PORT] [--service NAME] [--timeout-ms N]
//
// The target is, in order: the argument, $WAL_RECOVERY_HEALTH_TARGET, or the --listen address
// of the node running as PID 1 in this container (read from /proc/1/cmdline; 0.0.0.0 and :: are
// asked on 127.0.0.1). The default service is "" (the whole node; the node also registers
// "walrecovery.v1.WalService"). Plain Node: @grpc/grpc-js and grpc-health-check's service
// definition, both dependencies of wal-recovery.
// TLS: when the node has a CA (its --tls-ca, or $WAL_TLS_CA as docker-compose.yml sets it), the
// check speaks TLS and verifies the node's certificate against it; the health service asks for
// no client certificate. A node started with --insecure is asked in plaintext.
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

/** The value of option name (--listen, --tls-ca) on PID 1's command line, if any. */
function optionOfPid1(name) {
  try {
    const args = readFileSync('/proc/1/cmdline', 'utf8').split('\0');
    for (let i = 0; i < args.length; i += 1) {
      if (args[i] === name && args[i + 1]) return args[i + 1];
      if (args[i].startsWith(`${name}=`)) return args[i].slice(name.length + 1);
    }
  } catch {
    // not in a container, or /proc unreadable
  }
  return undefined;
}

/** TLS with the node's CA, or plaintext when it has none. */
function credentials() {
  const caPath = optionOfPid1('--tls-ca') ?? process.env.WAL_TLS_CA;
  if (!caPath) return grpc.credentials.createInsecure();
  try {
    return grpc.credentials.createSsl(readFileSync(caPath));
  } catch (error) {
    process.stderr.write(`healthcheck: cannot read the CA ${caPath}: ${error.message}\n`);
    process.exit(1);
  }
}

function parseArgs(argv) {
  const out = { target: undefined, service: '', timeoutMs: 3000 };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--service') out.service = argv[(i += 1)] ?? '';
    else if (a === '--timeout-ms') out.timeoutMs = Number(argv[(i += 1)]);
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: healthcheck.mjs [HOST:PORT] [--service NAME] [--timeout-ms N]\n');
      process.exit(0);
    } else out.target = a;
  }
  return out;
}

const options = parseArgs(process.argv.slice(2));
let target = options.target ?? process.env.WAL_RECOVERY_HEALTH_TARGET ?? optionOfPid1('--listen');
if (!target) {
  process.stderr.write('healthcheck: no target (give HOST:PORT, set WAL_RECOVERY_HEALTH_TARGET, or run beside a node started with --listen)\n');
  process.exit(1);
}
target = target.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '127.0.0.1:');
if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) options.timeoutMs = 3000;

const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');
const client = new HealthClient(target, credentials());
client.Check({ service: options.service }, { deadline: new Date(Date.now() + options.timeoutMs) }, (error, response) => {
  client.close();
  if (error) {
    process.stderr.write(`healthcheck: ${target}: ${error.details || error.message}\n`);
    process.exitCode = 1;
    return;
  }
  const status = response?.status ?? 'UNKNOWN';
  process.stdout.write(`${target} ${status}\n`);
  process.exitCode = status === 'SERVING' || status === 1 ? 0 : 1;
});
