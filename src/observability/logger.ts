// pino loggers with the project's stable keys (log, segment, entryIndex, offsetBytes, peer).
import pino, { type Logger } from 'pino';

export function createLogger(options: { level?: string; base?: Record<string, unknown> } = {}): Logger {
  return pino({ level: options.level ?? process.env['WAL_RECOVERY_LOG_LEVEL'] ?? 'info', base: options.base ?? {} }, pino.destination(2));
}
