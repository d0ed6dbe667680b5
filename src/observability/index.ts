// Public face of observability: Prometheus metrics and pino loggers.
export { NodeMetrics } from './metrics.js';
export { createLogger } from './logger.js';
export { type TracingOptions, type TraceContext, enableTracing, disableTracing, tracingEnabled, withSpan, withSpanSync, spanEvent, activeTraceContext } from './tracing.js';
