// Copying a sealed segment file from another member (PeerService.FetchSegment) into a temporary
// file, bounded by the segment's record in etcd.
//
// Fault model: the member may be broken or hostile. It may send more bytes than the record says
// (without end), another total, chunks out of order, or bytes that fail their checksums. The
// record's byte length caps what is written (PeerClient.fetchSegmentBounded cancels the stream
// past it); the caller verifies the whole file against the record before installing it and
// removes it otherwise, so a refused copy leaves nothing behind.
import type { Disk } from '../io/index.js';
import { ReplicationError, type SegmentMeta } from '../replication/index.js';
import type { PeerClient } from '../rpc/index.js';

export const FETCH_CHUNK_BYTES = 1024 * 1024;

/** Writes the member's copy of meta's segment to path; throws when it does not match the record's size. */
export async function fetchSegmentFile(client: PeerClient, disk: Disk, meta: SegmentMeta, path: string): Promise<void> {
  if (meta.state !== 'SEALED' || meta.byteLength <= 0) throw new ReplicationError(`segment ${meta.segmentId} of log ${meta.log} is not sealed in etcd: nothing to fetch`);
  const out = await disk.open(path, 'w');
  try {
    let position = 0;
    for await (const data of client.fetchSegmentBounded(meta.log, meta.segmentId, meta.byteLength, FETCH_CHUNK_BYTES)) {
      for (let at = 0; at < data.byteLength; ) {
        const { bytesWritten } = await out.write(data, at, data.byteLength - at, position);
        if (bytesWritten <= 0) throw new Error(`failed to write the fetched segment ${meta.segmentId} at offset ${position}: no progress`);
        at += bytesWritten;
        position += bytesWritten;
      }
    }
  } finally {
    await out.close();
  }
}
