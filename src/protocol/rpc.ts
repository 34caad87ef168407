/**
 * One-shot request/response over a fresh libp2p stream, for the small control exchanges of the swarm
 * (catalog listing, manifest fetch). Bulk data goes over the long-lived chunk streams instead.
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';
import { asError, FrameReader, FrameWriter, type Frame } from './frames.js';

export interface RpcLimits {
  maxHeaderBytes: number;
  maxPayloadBytes: number;
}

export interface RpcReply {
  header: object;
  payload?: Uint8Array;
}

export type RpcHandler = (request: Frame, peer: string) => Promise<RpcReply>;

/** Serve `protocol`: each stream carries one request and one reply. Bad requests reset the stream. */
export async function serveRpc(
  node: Pick<Libp2p, 'handle'>,
  protocol: string,
  limits: RpcLimits,
  handler: RpcHandler,
): Promise<void> {
  await node.handle(
    protocol,
    (stream: Stream, connection: Connection) => {
      void (async () => {
        const reader = new FrameReader(stream, limits);
        try {
          const request = await reader.next();
          if (request === undefined) throw new Error('the peer closed the stream before sending a request');
          const reply = await handler(request, connection.remotePeer.toString());
          await new FrameWriter(stream).write(reply.header, reply.payload);
          await stream.close();
        } catch (err) {
          stream.abort(asError(err, `${protocol} request failed`));
        }
      })();
    },
    { maxInboundStreams: 16 },
  );
}

/** Send one request to `peer` and return its reply frame. */
export async function callRpc(
  node: Pick<Libp2p, 'dialProtocol'>,
  peer: PeerId,
  protocol: string,
  header: object,
  limits: RpcLimits,
  timeoutMs = 15_000,
): Promise<Frame> {
  const signal = AbortSignal.timeout(timeoutMs);
  let stream: Stream;
  try {
    stream = await node.dialProtocol(peer, protocol, { signal });
  } catch (err) {
    throw asError(err, `cannot open ${protocol} to ${peer.toString()}`);
  }
  const timer = setTimeout(() => stream.abort(new Error(`${protocol} to ${peer.toString()} timed out`)), timeoutMs);
  try {
    const reader = new FrameReader(stream, limits);
    await new FrameWriter(stream).write(header);
    const reply = await reader.next();
    if (reply === undefined) throw new Error(`${peer.toString()} closed ${protocol} without a reply`);
    await stream.close().catch(() => undefined);
    return reply;
  } catch (err) {
    stream.abort(asError(err, `${protocol} failed`));
    throw asError(err, `${protocol} to ${peer.toString()} failed`);
  } finally {
    clearTimeout(timer);
  }
}
