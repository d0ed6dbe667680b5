#!/usr/bin/env node
// The `wal-recovery` executable. Sets process.exitCode rather than calling process.exit, so
// everything written to stdout and stderr is flushed before the process ends.
import { runCli } from './program.js';

process.exitCode = await runCli(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
