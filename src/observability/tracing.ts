// OpenTelemetry tracing (README "Tracing"): off by default, and then free: no OpenTelemetry
// module is loaded, withSpan calls its function directly and inject adds nothing. enableTracing
// (--otlp-endpoint, --trace-sample-ratio) loads the SDK, registers a process-wide tracer provider
// with the AsyncLocalStorage context manager and the W3C propagator, so that the active span
// follows a call through awaits and into gRPC metadata (traceparent) on every outgoing call
// (src/rpc/clients.ts' interceptor); servers continue the caller's trace (src/rpc/server.ts).
// Sampling is parent-based: a sampled caller's trace is sampled on every node it reaches.
// The store, replication, client and io layers import this file itself, not observability's
// index: that would load prom-client into every program that only opens a store.
import type * as Api from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';

export interface TracingOptions {
  /** OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (ignored when exporter is given). */
  readonly otlpEndpoint?: string;
  /** Share of new traces sampled, 0..1. */
  readonly sampleRatio: number;
  readonly serviceName: string;
  /** Tests: an in-memory exporter, exported synchronously (SimpleSpanProcessor). */
  readonly exporter?: SpanExporter;
}

type Attributes = Record<string, string | number | boolean>;

interface Runtime {
  readonly api: typeof Api;
  readonly tracer: Api.Tracer;
  readonly shutdown: () => Promise<void>;
}

let runtime: Runtime | undefined;

export function tracingEnabled(): boolean {
  return runtime !== undefined;
}

/** Loads the SDK and starts tracing for this process (a second call replaces the first). */
export async function enableTracing(o: TracingOptions): Promise<void> {
  if (!(o.sampleRatio >= 0 && o.sampleRatio <= 1)) throw new Error('tracing: sampleRatio must be in [0, 1]');
  await disableTracing();
  const api = await import('@opentelemetry/api');
  const base = await import('@opentelemetry/sdk-trace-base');
  const { NodeTracerProvider } = await import('@opentelemetry/sdk-trace-node');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  let exporter = o.exporter;
  if (!exporter) {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
    exporter = new OTLPTraceExporter(o.otlpEndpoint ? { url: o.otlpEndpoint } : {});
  }
  const processor = o.exporter ? new base.SimpleSpanProcessor(exporter) : new base.BatchSpanProcessor(exporter);
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': o.serviceName }),
    sampler: new base.ParentBasedSampler({ root: new base.TraceIdRatioBasedSampler(o.sampleRatio) }),
    spanProcessors: [processor],
  });
  provider.register(); // global provider, AsyncLocalStorage context manager, W3C propagator
  runtime = {
    api,
    tracer: provider.getTracer('wal-recovery'),
    shutdown: async () => {
      await provider.shutdown();
      api.trace.disable();
      api.context.disable();
      api.propagation.disable();
    },
  };
}

export async function disableTracing(): Promise<void> {
  const r = runtime;
  runtime = undefined;
  await r?.shutdown();
}

/**
 * Runs fn in a span (a child of the active one, or of parent when given); ends it when fn settles,
 * recording a failure. With tracing off, fn() and nothing else.
 */
export function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>, parent?: Api.Context): Promise<T> {
  const r = runtime;
  if (!r) return fn();
  const { api, tracer } = r;
  return tracer.startActiveSpan(name, { attributes }, parent ?? api.context.active(), async (span) => {
    try {
      return await fn();
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: api.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** The active context, to parent spans started later from a queue (undefined when off). */
export type TraceContext = Api.Context;
export function activeTraceContext(): TraceContext | undefined {
  return runtime?.api.context.active();
}

/** withSpan for synchronous work (the verification of frames already fetched, say). */
export function withSpanSync<T>(name: string, attributes: Attributes, fn: () => T): T {
  const r = runtime;
  if (!r) return fn();
  return r.tracer.startActiveSpan(name, { attributes }, (span) => {
    try {
      return fn();
    } finally {
      span.end();
    }
  });
}

/** Adds an event to the active span (a repair's detection, say); nothing when off or no span. */
export function spanEvent(name: string, attributes: Attributes): void {
  runtime?.api.trace.getActiveSpan()?.addEvent(name, attributes);
}

/** A gRPC Metadata's shape, as much as propagation needs. */
export interface MetadataLike {
  get(key: string): Array<string | Buffer>;
  set(key: string, value: string): void;
}

/** Writes the active span's context (traceparent, tracestate) into outgoing metadata. */
export function injectTraceContext(metadata: MetadataLike): void {
  const r = runtime;
  if (!r) return;
  r.api.propagation.inject(r.api.context.active(), metadata, { set: (carrier, key, value) => carrier.set(key, value) });
}

/** Runs a server handler in a span continuing the caller's trace (from its metadata). */
export function serverSpan<T>(method: string, metadata: MetadataLike, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  const r = runtime;
  if (!r) return fn();
  const parent = r.api.propagation.extract(r.api.ROOT_CONTEXT, metadata, {
    get: (carrier, key) => {
      const value = carrier.get(key)[0];
      return value === undefined ? undefined : String(value);
    },
    keys: () => ['traceparent', 'tracestate'],
  });
  return withSpan(method, { 'rpc.system': 'grpc', 'rpc.method': method, ...attributes }, fn, parent);
}
