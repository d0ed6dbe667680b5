#!/usr/bin/env node
// The `wal-recovery` executable. Sets process.exitCode rather than calling process.exit, so
// everything written to stdout and stderr is flushed before the process ends.
import { runCli } from './program.js';

// grpc-js passes a target's IP address (127.0.0.1:7001) as the TLS ServerName, which Node flags
// as DEP0123 on the first TLS call of every process: a line of noise on every CLI call and in
// every node's log. The certificate is still checked against the IP address (its SAN). Every
// other warning is printed as Node would.
process.removeAllListeners('warning');
process.on('warning', (warning: Error & { code?: string }) => {
  if (warning.code !== 'DEP0123') process.stderr.write(`(node:${process.pid}) ${warning.name}: ${warning.message}\n`);
});

process.exitCode = await runCli(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
