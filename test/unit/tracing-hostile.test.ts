// Tracing on a server reached by callers it does not trust (src/observability/tracing.ts): a
// malformed traceparent or tracestate is ignored (the handler runs, in a new root span), never a
// failed call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { disableTracing, enableTracing, serverSpan } from '../../src/observability/tracing.js';

const exporter = new InMemorySpanExporter();

function metadata(values: Record<string, Array<string | Buffer>>): { get(key: string): Array<string | Buffer>; set(): void } {
  return { get: (key) => values[key] ?? [], set: () => undefined };
}

describe('serverSpan with a hostile caller\'s metadata', () => {
  beforeAll(async () => enableTracing({ sampleRatio: 1, serviceName: 'test', exporter }));
  afterAll(async () => disableTracing());

  const cases: Array<[string, Record<string, Array<string | Buffer>>]> = [
    ['garbage', { traceparent: ['not a traceparent'] }],
    ['all-zero trace id', { traceparent: ['00-00000000000000000000000000000000-0000000000000000-01'] }],
    ['version ff', { traceparent: ['ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'] }],
    ['a megabyte', { traceparent: ['00-' + 'a'.repeat(1 << 20)], tracestate: ['k=' + 'v'.repeat(1 << 20)] }],
    ['binary', { traceparent: [Buffer.from([0, 255, 10, 13])] }],
    ['malformed tracestate', { traceparent: ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'], tracestate: ['=,=,,===' + ',x=y'.repeat(100)] }],
    ['newline', { traceparent: ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n'] }],
  ];
  for (const [name, values] of cases) {
    it(`${name}: the handler runs and its span is a root or a valid child`, async () => {
      exporter.reset();
      await expect(serverSpan('Append', metadata(values), {}, async () => 42)).resolves.toBe(42);
      const spans = exporter.getFinishedSpans();
      expect(spans).toHaveLength(1);
      const ctx = spans[0]?.spanContext();
      expect(ctx?.traceId).toMatch(/^[0-9a-f]{32}$/);
      expect(ctx?.traceId).not.toBe('0'.repeat(32));
    });
  }
});
