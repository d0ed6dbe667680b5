// Calls with raw bytes, for tests of what a node does with requests that may not decode: the
// request is sent as given (no serializer), the answer is not decoded. Every method of the three
// services, from the descriptors proto-loader keeps.
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../../src/rpc/proto.js';

const PACKAGE = 'walrecovery.v1';
const SERVICES = ['WalService', 'PeerService', 'AdminService'] as const;

export interface Method {
  /** Service.Method */
  readonly name: string;
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  /** The request message's name, without the package. */
  readonly requestType: string;
  readonly serialize: (value: unknown) => Buffer;
}

export function methodsOf(): Method[] {
  const definitions = loadProto().packageDefinition as unknown as Record<string, Record<string, grpc.MethodDefinition<unknown, unknown> & { requestType: { type: { name: string } } }>>;
  const methods: Method[] = [];
  for (const service of SERVICES) {
    for (const [name, m] of Object.entries(definitions[`${PACKAGE}.${service}`] ?? {})) {
      methods.push({ name: `${service}.${name}`, path: m.path, requestStream: m.requestStream, responseStream: m.responseStream, requestType: m.requestType.type.name, serialize: (v) => m.requestSerialize(v) });
    }
  }
  return methods;
}

const identity = (b: Buffer): Buffer => b;

/**
 * One call with the given request bytes (each one message of a client stream); a server stream
 * is cancelled after streamMessagesMax messages. Resolves with the call's final status.
 */
export function callRaw(client: grpc.Client, method: Method, requests: Buffer[], deadlineMs: number, streamMessagesMax = 20): Promise<{ code: grpc.status; details: string }> {
  const options = { deadline: new Date(Date.now() + deadlineMs) };
  return new Promise((resolve) => {
    const done = (error: grpc.ServiceError | null): void => resolve(error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: '' });
    if (method.requestStream) {
      const stream = client.makeClientStreamRequest(method.path, identity, identity, new grpc.Metadata(), options, (error) => done(error));
      for (const request of requests) stream.write(request);
      stream.end();
      return;
    }
    const request = requests[0] ?? Buffer.alloc(0);
    if (!method.responseStream) {
      client.makeUnaryRequest(method.path, identity, identity, request, new grpc.Metadata(), options, (error) => done(error));
      return;
    }
    const stream = client.makeServerStreamRequest(method.path, identity, identity, request, new grpc.Metadata(), options);
    let messages = 0;
    stream.on('data', () => {
      messages += 1;
      if (messages === streamMessagesMax) stream.cancel();
    });
    stream.on('error', (error: grpc.ServiceError) => done(error));
    stream.on('end', () => done(null));
  });
}
