// Requests that do not decode (issue 11, found by test/integration/fuzz.test.ts).
//
// grpc-js answers INTERNAL ("Error deserializing request") when a service's request deserializer
// throws, which says the node failed rather than the caller. Each request deserializer is wrapped
// so that it never throws: bytes that do not decode become an Undecodable value, and the call is
// answered INVALID_ARGUMENT (through toStatus) before any handler sees it. A client stream's
// handler checks each message it takes with requireDecoded.
import * as grpc from '@grpc/grpc-js';
import { UndecodableRequestError } from './errors.js';
import { toStatus } from './status.js';

/** What a wrapped deserializer returns for bytes that do not decode. */
class Undecodable {
  constructor(readonly error: UndecodableRequestError) {}
}

/** The service definition with every request deserializer made total (see the header). */
export function tolerantDefinition(serviceName: string, definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const tolerant: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition)) {
    const decode = method.requestDeserialize;
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (error) {
          return new Undecodable(new UndecodableRequestError(`${serviceName}.${name}`, { cause: error }));
        }
      },
    };
  }
  return tolerant as grpc.ServiceDefinition;
}

/** The message itself, or UndecodableRequestError when it did not decode. */
export function requireDecoded<T>(message: T): T {
  if (message instanceof Undecodable) throw message.error;
  return message;
}

/**
 * Wraps the handlers of the methods with one request (unary, server stream): a request that did
 * not decode is answered INVALID_ARGUMENT and the handler is not called.
 */
export function decodedService(definition: grpc.ServiceDefinition, handlers: grpc.UntypedServiceImplementation): grpc.UntypedServiceImplementation {
  const checked: grpc.UntypedServiceImplementation = { ...handlers };
  for (const [name, handler] of Object.entries(handlers)) {
    const attrs = definition[name];
    if (!attrs || attrs.requestStream) continue;
    const run = handler as (call: unknown, callback?: unknown) => void;
    checked[name] = ((call: { request: unknown; emit(event: 'error', status: unknown): boolean }, callback?: (error: grpc.ServiceError) => void) => {
      if (!(call.request instanceof Undecodable)) return run(call, callback);
      const error = call.request.error;
      const status = { ...toStatus(error), metadata: new grpc.Metadata() };
      if (attrs.responseStream) call.emit('error', status);
      else callback?.(Object.assign(error, status));
    }) as unknown as grpc.UntypedHandleCall;
  }
  return checked;
}
