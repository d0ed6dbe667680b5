// Public face of the cluster domain: a node, its options, and the etcd key space.
export { ClusterNode, VERSION } from './node.js';
export { type NodeOptions, type ResolvedNodeOptions, resolveNodeOptions, parseHostPort } from './options.js';
export { ClusterKeys, EtcdMetadata, connectEtcd } from './etcd.js';
export { RepairService, type RepairServiceOptions, type DetectionSource } from './repairs.js';
