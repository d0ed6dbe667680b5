// The one mapping from domain errors to gRPC statuses (src/rpc/status.ts). A client decides from
// the code alone whether to retry, go elsewhere or give up, so every error a call can end with
// must land on the code that says so; INTERNAL is for bugs only. Seen in a container chaos run:
// appends failed INTERNAL while etcd restarted, so clients could not tell a bug from a blip.
import { status as Status } from '@grpc/grpc-js';
import { BrokenCircuitError } from 'cockatiel';
import { ClientClosedError, EtcdLeaseInvalidError, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { isRetryable, toStatus } from '../../src/rpc/status.js';
import {
  BadRequestError,
  FenceFileDamagedError,
  FencedError,
  NoVerifiedCopyError,
  NotWriterError,
  QuorumUnavailableError,
  ReplicationError,
  UnknownLogError,
} from '../../src/replication/index.js';
import { StoreClosedError } from '../../src/wal/index.js';

const cases: Array<[string, unknown, Status]> = [
  ['etcd unavailable (etcd3)', new GRPCUnavailableError('14 UNAVAILABLE: No connection established'), Status.UNAVAILABLE],
  ['etcd deadline (etcd3)', new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED'), Status.UNAVAILABLE],
  ['etcd lease lost', new EtcdLeaseInvalidError('lease 42'), Status.UNAVAILABLE],
  ['etcd client closed', new ClientClosedError('kv'), Status.UNAVAILABLE],
  ['etcd circuit open', new BrokenCircuitError(), Status.UNAVAILABLE],
  ['a record changed under a recovery', new ReplicationError('segment 3 changed in etcd while sealing it'), Status.UNAVAILABLE],
  ['no quorum', new QuorumUnavailableError('l', 1, 2), Status.UNAVAILABLE],
  ['not the writer', new NotWriterError('l', 'n2'), Status.UNAVAILABLE],
  ['store closed', new StoreClosedError(), Status.UNAVAILABLE],
  ['fenced', new FencedError('l', 3, 4), Status.ABORTED],
  ['fence file damaged', new FenceFileDamagedError('l', '/d/EPOCH', 'is damaged ("x")'), Status.FAILED_PRECONDITION],
  ['bad request', new BadRequestError('epoch', 'must be positive'), Status.INVALID_ARGUMENT],
  ['unknown log', new UnknownLogError('l'), Status.NOT_FOUND],
  ['no verified copy', new NoVerifiedCopyError('l', 7, 'every copy fails its checksum'), Status.DATA_LOSS],
  ['a bug', new TypeError("cannot read properties of undefined (reading 'x')"), Status.INTERNAL],
];

describe('toStatus', () => {
  it.each(cases)('%s', (_name, error, code) => {
    const status = toStatus(error);
    expect(Status[status.code]).toBe(Status[code]);
    expect(status.details).toContain((error as Error).message);
  });

  it('etcd being out of reach is retryable, a fenced writer and a bug are not', () => {
    expect(isRetryable(toStatus(new GRPCUnavailableError('14 UNAVAILABLE')).code)).toBe(true);
    expect(isRetryable(toStatus(new FencedError('l', 3, 4)).code)).toBe(false);
    expect(isRetryable(toStatus(new TypeError('x')).code)).toBe(false);
  });
});
