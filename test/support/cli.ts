// The built CLI (dist/cli/main.js) as a child process, for tests that check what an operator
// sees: exit code, stdout and stderr. And `wal-recovery certs` through it, for the TLS tests.
import { execFile } from 'node:child_process';
import type { CertsLayout } from '../../src/cli/certs.js';
import { CLI } from './cluster.js';

const CLI_TIMEOUT_MS = 60_000;

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI with args and stdin input; env adds to (or, with '', blanks) this process's environment. */
export function cliProcess(args: readonly string[], env: NodeJS.ProcessEnv = {}, input = ''): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: CLI_TIMEOUT_MS }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.on('error', () => undefined); // a CLI that fails before reading stdin closes it
    child.stdin?.end(input);
  });
}

/** `wal-recovery certs --out outDir --nodes ...`: the layout it prints; throws when it fails. */
export async function makeCertsWithCli(outDir: string, nodes: readonly string[], more: readonly string[] = []): Promise<CertsLayout> {
  const made = await cliProcess(['certs', '--out', outDir, '--nodes', nodes.join(','), ...more]);
  if (made.code !== 0) throw new Error(`wal-recovery certs failed (exit ${made.code}): ${made.stderr}`);
  return JSON.parse(made.stdout) as CertsLayout;
}
