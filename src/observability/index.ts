// Public face of observability: Prometheus metrics and pino loggers.
export { NodeMetrics } from './metrics.js';
export { createLogger } from './logger.js';
