/**
 * '/joblet-agent/have/1': which chunks of a manifest a peer holds, kept current while it downloads.
 * A downloader opens one stream per (peer, manifest) and sends `sub`; the peer answers with its full
 * bitfield, then pushes `have1` for every chunk it stores, until the downloader closes the stream.
 * This is how partial holders become sources while they are still downloading (the swarm pipelines),
 * without one gossip message per chunk. A downloader that sends `hints: true` in its `sub` also gets `fetching`
 * for each chunk the peer has just asked a source for while only one peer held it (messages.ts): so hosts that
 * start together spread their first requests to the publisher over different chunks. Older agents ignore the
 * field and never send `fetching`; older downloaders do not ask for it.
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';
import { asError, FrameReader, FrameWriter } from './frames.js';
import { decodeHaveBits, parseHaveMessage, type HaveMessage } from './messages.js';

export const HAVE_PROTOCOL = '/joblet-agent/have/1';

const LIMITS = { maxHeaderBytes: 256 * 1024, maxPayloadBytes: 0 };
const ID_RE = /^sha256:[0-9a-f]{64}$/;

export interface HaveProvider {
  /**
   * Current bitfield of `manifest` (base64, as encodeHaveBits makes it) and a registration for later
   * chunks; null when this agent does not know the manifest.
   */
  subscribe(
    manifest: string,
    onIndex: (index: number) => void,
    onFetching?: (index: number) => void,
  ): Promise<{ bits: string; unsubscribe: () => void } | null>;
  /** The subscribed peer says it is fetching chunk `index` of `manifest` (sent the other way, see subscribeHave). */
  peerFetching?(peer: string, manifest: string, index: number): void;
}

export async function serveHave(node: Pick<Libp2p, 'handle'>, provider: HaveProvider): Promise<void> {
  await node.handle(
    HAVE_PROTOCOL,
    (stream: Stream, connection: Connection) => {
      const peer = connection.remotePeer.toString();
      void (async () => {
        const reader = new FrameReader(stream, LIMITS);
        const writer = new FrameWriter(stream);
        let unsubscribe = () => {};
        try {
          const first = await reader.next();
          const h = first?.header as { t?: unknown; manifest?: unknown; hints?: unknown } | undefined;
          if (h?.t !== 'sub' || typeof h.manifest !== 'string' || !ID_RE.test(h.manifest)) throw new Error('bad have subscription');
          const manifest = h.manifest;
          const push = (index: number) => {
            writer.write({ t: 'have1', manifest, index }).catch(() => stream.abort(new Error('have push failed')));
          };
          // A chunk stored while the bitfield is being computed must reach the peer after the bitfield,
          // which replaces whatever the peer knew: hold such updates back until the bitfield is queued.
          let early: number[] | null = [];
          // Hints are news of the moment: one that would go out before the bitfield is dropped, not held back.
          const hint = (index: number) => {
            if (early === null) writer.write({ t: 'fetching', manifest, index }).catch(() => stream.abort(new Error('have push failed')));
          };
          const sub = await provider.subscribe(manifest, (index) => (early ? early.push(index) : push(index)), h.hints === true ? hint : undefined);
          const sent = writer.write({ t: 'have', manifest, bits: sub?.bits ?? '' });
          early.forEach(push);
          early = null;
          await sent;
          if (!sub) {
            await stream.close();
            return;
          }
          unsubscribe = sub.unsubscribe;
          // The downloader's close ends the subscription. Before that it may send its own `fetching` hints this way
          // (subscribeHave's hint); anything else is ignored, as agents before the hints ignored everything here.
          for (let frame = await reader.next(); frame !== undefined; frame = await reader.next()) {
            const msg = parseOrNull(frame.header);
            if (msg?.t === 'fetching' && msg.manifest === manifest) provider.peerFetching?.(peer, manifest, msg.index);
          }
          await stream.close().catch(() => undefined);
        } catch (err) {
          stream.abort(asError(err, 'have stream failed'));
        } finally {
          unsubscribe();
        }
      })();
    },
    { maxInboundStreams: 64 },
  );
}

export interface HaveSubscription {
  /** Resolves when the stream ends, for whatever reason. */
  ended: Promise<void>;
  close(): void;
  /**
   * Tell the peer this host is fetching chunk `index` (only its source holding it): a peer of this version counts
   * it (HaveProvider.peerFetching), an older one ignores it. Best effort: a failed write is not an error.
   */
  hint(index: number): void;
}

function parseOrNull(header: unknown): HaveMessage | null {
  try {
    return parseHaveMessage(header);
  } catch {
    return null;
  }
}

/**
 * Subscribe to `peer`'s holdings of `manifest`. `onBits` gets the initial predicate (false everywhere when
 * the peer does not know the manifest yet), `onIndex` each later chunk, and `onFetching`, when given, each chunk
 * the peer says it has just asked for while it believed only one peer held it (a peer of an older version never
 * says).
 */
export async function subscribeHave(
  node: Pick<Libp2p, 'dialProtocol'>,
  peer: PeerId,
  manifest: string,
  onBits: (has: (index: number) => boolean, known: boolean) => void,
  onIndex: (index: number) => void,
  onFetching?: (index: number) => void,
): Promise<HaveSubscription> {
  const stream = await node.dialProtocol(peer, HAVE_PROTOCOL, { signal: AbortSignal.timeout(10_000) });
  const reader = new FrameReader(stream, LIMITS);
  const writer = new FrameWriter(stream);
  await writer.write(onFetching === undefined ? { t: 'sub', manifest } : { t: 'sub', manifest, hints: true });
  const ended = (async () => {
    try {
      for await (const frame of reader) {
        const msg = parseHaveMessage(frame.header);
        if (msg.manifest !== manifest) throw new Error('have message for another manifest');
        if (msg.t === 'have') onBits(decodeHaveBits(msg.bits), msg.bits.length > 0);
        else if (msg.t === 'have1') onIndex(msg.index);
        else if (onFetching === undefined) throw new Error('fetching hint not asked for');
        else onFetching(msg.index);
      }
    } catch {
      stream.abort(new Error('have subscription failed'));
    }
  })();
  return {
    ended,
    close: () => { stream.close().catch(() => stream.abort(new Error('closing have subscription'))); },
    hint: (index) => {
      if (stream.status === 'open') writer.write({ t: 'fetching', manifest, index }).catch(() => {});
    },
  };
}
