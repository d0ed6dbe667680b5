// The cluster's view of etcd: its key space, JSON values with compare-and-swap, leases and
// watches. etcd holds metadata only (membership, elections, what every segment must contain),
// never entry data.
//
// Fault model: etcd may restart or be unreachable for a while. Calls fail fast (no circuit
// breaker, short deadlines) and the loops that use them retry with backoff; leases are re-granted
// after they are lost. A watch that breaks is re-established by etcd3 itself.
import { readFile } from 'node:fs/promises';
import { Etcd3, type IKeyValue, type Lease, type Watcher } from 'etcd3';
import { noop } from 'cockatiel';
import { TlsConfigError } from '../rpc/index.js';
import { type ClusterKeys, type ClusterMetadata, type KeyGuard, type OnMalformedValue, type Versioned, decodeEach, decodeValue } from './metadata.js';
import type { EtcdTlsPaths } from './options.js';

export { ClusterKeys, KEY_ROOT, type Versioned } from './metadata.js';

export const ETCD_CALL_DEADLINE_MS = 3_000;

/** etcd3's TLS credentials: etcd's CA, and the client certificate etcd's --client-cert-auth asks for. */
export interface EtcdCredentials {
  readonly rootCertificate: Buffer;
  readonly privateKey?: Buffer;
  readonly certChain?: Buffer;
}

/** Reads the PEM files of the etcd connection; a missing one is a clear error naming it. */
export async function loadEtcdCredentials(paths: EtcdTlsPaths): Promise<EtcdCredentials> {
  const read = async (what: string, path: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new TlsConfigError(`cannot read the etcd TLS ${what} ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const rootCertificate = await read('CA certificate', paths.ca);
  if (paths.cert === undefined || paths.key === undefined) return { rootCertificate };
  return { rootCertificate, certChain: await read('certificate', paths.cert), privateKey: await read('key', paths.key) };
}

export function connectEtcd(endpoints: readonly string[], credentials?: EtcdCredentials): Etcd3 {
  return new Etcd3({
    hosts: [...endpoints],
    ...(credentials ? { credentials: { ...credentials } } : {}),
    dialTimeout: 2_000,
    // The default circuit breaker opens for 5 s after 3 failures, which outlives a short lease
    // across an etcd restart; our own loops retry with backoff instead.
    faultHandling: { host: () => noop, global: noop },
    defaultCallOptions: () => ({ deadline: new Date(Date.now() + ETCD_CALL_DEADLINE_MS) }),
  });
}

function decode<T>(kv: IKeyValue, parse: (raw: unknown) => T): Versioned<T> {
  const key = kv.key.toString();
  return {
    key,
    value: decodeValue(key, kv.value.toString(), parse),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    lease: kv.lease,
  };
}

/** JSON values under the cluster's keys; parse validates each value read. */
export class EtcdMetadata implements ClusterMetadata<Lease> {
  private readonly watchers = new Set<Watcher>();

  constructor(readonly client: Etcd3, readonly keys: ClusterKeys) {}

  lease(ttlSeconds: number): Lease {
    return this.client.lease(ttlSeconds, { autoKeepAlive: true });
  }

  async get<T>(key: string, parse: (raw: unknown) => T): Promise<Versioned<T> | undefined> {
    const response = await this.client.get(key).exec();
    const kv = response.kvs[0];
    return kv ? decode(kv, parse) : undefined;
  }

  async list<T>(prefix: string, parse: (raw: unknown) => T, onMalformed?: OnMalformedValue): Promise<Array<Versioned<T>>> {
    const response = await this.client.getAll().prefix(prefix).sort('Key', 'Ascend').exec();
    return decodeEach(response.kvs, (kv) => decode(kv, parse), (kv) => kv.key.toString(), onMalformed);
  }

  async firstCreated<T>(prefix: string, parse: (raw: unknown) => T): Promise<Versioned<T> | undefined> {
    const response = await this.client.getAll().prefix(prefix).sort('Create', 'Ascend').limit(1).exec();
    const kv = response.kvs[0];
    return kv ? decode(kv, parse) : undefined;
  }

  /** Creates the key only if it does not exist; its mod revision, or undefined when it existed. */
  async create(key: string, value: unknown, lease?: Lease): Promise<number | undefined> {
    const put = lease ? lease.put(key).value(JSON.stringify(value)) : this.client.put(key).value(JSON.stringify(value));
    const result = await this.client.if(key, 'Create', '==', 0).then(put).commit();
    return result.succeeded ? Number(result.header.revision) : undefined;
  }

  /** Creates key only if it does not exist and every guard holds; the new revision, or undefined. */
  async createWhile(key: string, value: unknown, guards: readonly KeyGuard[]): Promise<number | undefined> {
    let comparison = this.client.if(key, 'Create', '==', 0);
    for (const guard of guards) comparison = 'createRevision' in guard ? comparison.and(guard.key, 'Create', '==', guard.createRevision) : comparison.and(guard.key, 'Mod', '==', guard.modRevision);
    const result = await comparison.then(this.client.put(key).value(JSON.stringify(value))).commit();
    return result.succeeded ? Number(result.header.revision) : undefined;
  }

  async createWhileUnchanged(key: string, value: unknown, lease: Lease, guardKey: string, guardModRevision: number): Promise<number | undefined> {
    const result = await this.client
      .if(key, 'Create', '==', 0)
      .and(guardKey, 'Mod', '==', guardModRevision)
      .then(lease.put(key).value(JSON.stringify(value)))
      .commit();
    return result.succeeded ? Number(result.header.revision) : undefined;
  }

  /** Replaces the value only if the key was last modified at modRevision; the new mod revision. */
  async compareAndSwap(key: string, value: unknown, modRevision: number): Promise<number | undefined> {
    const result = await this.client.if(key, 'Mod', '==', modRevision).then(this.client.put(key).value(JSON.stringify(value))).commit();
    return result.succeeded ? Number(result.header.revision) : undefined;
  }

  async put(key: string, value: unknown, lease?: Lease): Promise<void> {
    if (lease) await lease.put(key).value(JSON.stringify(value));
    else await this.client.put(key).value(JSON.stringify(value));
  }

  async delete(key: string): Promise<void> {
    await this.client.delete().key(key);
  }

  async deleteIfUnchanged(key: string, modRevision: number): Promise<void> {
    await this.client.if(key, 'Mod', '==', modRevision).then(this.client.delete().key(key)).commit();
  }

  /** Calls onChange after every put or delete under prefix, until close(). */
  async watchPrefix(prefix: string, onChange: (key: string, deleted: boolean) => void): Promise<() => Promise<void>> {
    const watcher = await this.client.watch().prefix(prefix).create();
    this.watchers.add(watcher);
    watcher.on('put', (kv) => onChange(kv.key.toString(), false));
    watcher.on('delete', (kv) => onChange(kv.key.toString(), true));
    watcher.on('error', () => undefined); // etcd3 reconnects watches by itself
    return async () => {
      this.watchers.delete(watcher);
      await watcher.cancel();
    };
  }

  async close(): Promise<void> {
    for (const watcher of this.watchers) await watcher.cancel().catch(() => undefined);
    this.watchers.clear();
    this.client.close();
  }
}
