// Loads the .proto files under proto/ once, with the options the generated types were made with
// (package.json "proto:gen": keepCase, longs as Number, enums as String, defaults, oneofs).
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as WalProto } from './generated/wal.js';
import type { ProtoGrpcType as PeerProto } from './generated/peer.js';
import type { ProtoGrpcType as AdminProto } from './generated/admin.js';

export const PROTO_FILES = ['walrecovery/v1/wal.proto', 'walrecovery/v1/peer.proto', 'walrecovery/v1/admin.proto'] as const;

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** proto/ sits at the package root: two levels above src/rpc and dist/rpc alike. */
export function protoDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidate = join(here, '..', '..', 'proto');
  if (!existsSync(candidate)) throw new Error(`proto directory not found at ${candidate}`);
  return candidate;
}

export type WalRecoveryProto = WalProto & PeerProto & AdminProto;

let cached: { packageDefinition: protoLoader.PackageDefinition; proto: WalRecoveryProto } | undefined;

export function loadProto(): { packageDefinition: protoLoader.PackageDefinition; proto: WalRecoveryProto } {
  if (!cached) {
    const packageDefinition = protoLoader.loadSync([...PROTO_FILES], { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as WalRecoveryProto;
    cached = { packageDefinition, proto };
  }
  return cached;
}
