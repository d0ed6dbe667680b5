// Public face of the cluster domain: a node, its options, and the etcd key space.
export { ClusterNode, VERSION } from './node.js';
export { type EtcdTlsPaths, type NodeOptions, type ResolvedNodeOptions, resolveNodeOptions, parseHostPort } from './options.js';
export { ClusterKeys, EtcdMetadata, type EtcdCredentials, connectEtcd, loadEtcdCredentials } from './etcd.js';
export { type ClusterMetadata, type KeyGuard, type MetadataLease, type OnMalformedValue, type Versioned, MalformedValueError, decodeEach, decodeValue } from './metadata.js';
export { Election, etcdElectionStore } from './election.js';
export { NodeSession, type MemberInfo, parseMemberInfo } from './session.js';
export { LogRuntime, type LogRuntimeContext } from './log-runtime.js';
export { LocalPeer } from './local-peer.js';
export { EtcdSegmentDirectory } from './directory.js';
export { EtcdEpochHolders } from './epoch-holders.js';
export { RepairService, type RepairServiceOptions, type DetectionSource } from './repairs.js';
export { type ReplicaSourceFor, type ReplicaSourcesOptions, replicaSources } from './replica-sources.js';
export { Scrubber, type ScrubberOptions } from './scrubber.js';
export { InThreadScrubChecker } from './scrub-pool.js';
export { Coordinator, type CoordinatorOptions, etcdRepairReportExists, etcdRepairReporter, etcdRepairReports } from './coordinator.js';
