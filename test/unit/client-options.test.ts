// WalClient's options: plaintext only when asked for by name, and the batch cap of the nodes.
import { describe, expect, it } from 'vitest';
import { InvalidClientOptionError, resolveClientOptions } from '../../src/client/index.js';
import { APPEND_ENTRIES_MAX } from '../../src/replication/index.js';

const TARGETS = ['127.0.0.1:7400'];
const TLS = { ca: Buffer.from('ca'), cert: Buffer.from('cert'), key: Buffer.from('key') };

describe('resolveClientOptions', () => {
  it('needs tls or insecure: true; not both, not neither', () => {
    expect(() => resolveClientOptions({ targets: TARGETS })).toThrow(InvalidClientOptionError);
    expect(() => resolveClientOptions({ targets: TARGETS })).toThrow(/tls is required.*insecure: true/);
    expect(() => resolveClientOptions({ targets: TARGETS, insecure: false })).toThrow(/tls is required/);
    expect(() => resolveClientOptions({ targets: TARGETS, tls: TLS, insecure: true })).toThrow(/insecure goes without tls/);
    expect(resolveClientOptions({ targets: TARGETS, insecure: true }).transport.kind).toBe('insecure');
    expect(resolveClientOptions({ targets: TARGETS, tls: TLS }).transport.kind).toBe('tls');
  });

  it('caps coalesced batches at the entries one Append may carry', () => {
    expect(resolveClientOptions({ targets: TARGETS, insecure: true, batchEntriesMax: APPEND_ENTRIES_MAX }).batchEntriesMax).toBe(APPEND_ENTRIES_MAX);
    expect(() => resolveClientOptions({ targets: TARGETS, insecure: true, batchEntriesMax: APPEND_ENTRIES_MAX + 1 })).toThrow(InvalidClientOptionError);
  });
});
