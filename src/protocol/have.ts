/**
 * '/joblet-agent/have/1': which chunks of a manifest a peer holds, kept current while it downloads.
 * A downloader opens one stream per (peer, manifest) and sends `sub`; the peer answers with its full
 * bitfield, then pushes `have1` for every chunk it stores, until the downloader closes the stream.
 * This is how partial holders become sources while they are still downloading (the swarm pipelines),
 * without one gossip message per chunk.
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';
import { asError, FrameReader, FrameWriter } from './frames.js';
import { decodeHaveBits, parseHaveMessage } from './messages.js';

export const HAVE_PROTOCOL = '/joblet-agent/have/1';

const LIMITS = { maxHeaderBytes: 256 * 1024, maxPayloadBytes: 0 };
const ID_RE = /^sha256:[0-9a-f]{64}$/;

export interface HaveProvider {
  /**
   * Current bitfield of `manifest` (base64, as encodeHaveBits makes it) and a registration for later
   * chunks; null when this agent does not know the manifest.
   */
  subscribe(manifest: string, onIndex: (index: number) => void): Promise<{ bits: string; unsubscribe: () => void } | null>;
}

export async function serveHave(node: Pick<Libp2p, 'handle'>, provider: HaveProvider): Promise<void> {
  await node.handle(
    HAVE_PROTOCOL,
    (stream: Stream, _connection: Connection) => {
      void (async () => {
        const reader = new FrameReader(stream, LIMITS);
        const writer = new FrameWriter(stream);
        let unsubscribe = () => {};
        try {
          const first = await reader.next();
          const h = first?.header as { t?: unknown; manifest?: unknown } | undefined;
          if (h?.t !== 'sub' || typeof h.manifest !== 'string' || !ID_RE.test(h.manifest)) throw new Error('bad have subscription');
          const manifest = h.manifest;
          const push = (index: number) => {
            writer.write({ t: 'have1', manifest, index }).catch(() => stream.abort(new Error('have push failed')));
          };
          // A chunk stored while the bitfield is being computed must reach the peer after the bitfield,
          // which replaces whatever the peer knew: hold such updates back until the bitfield is queued.
          let early: number[] | null = [];
          const sub = await provider.subscribe(manifest, (index) => (early ? early.push(index) : push(index)));
          const sent = writer.write({ t: 'have', manifest, bits: sub?.bits ?? '' });
          early.forEach(push);
          early = null;
          await sent;
          if (!sub) {
            await stream.close();
            return;
          }
          unsubscribe = sub.unsubscribe;
          // Nothing more is expected from the downloader; its close ends the subscription.
          while ((await reader.next()) !== undefined) { /* ignore */ }
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
}

/**
 * Subscribe to `peer`'s holdings of `manifest`. `onBits` gets the initial predicate (false everywhere when
 * the peer does not know the manifest yet), `onIndex` each later chunk.
 */
export async function subscribeHave(
  node: Pick<Libp2p, 'dialProtocol'>,
  peer: PeerId,
  manifest: string,
  onBits: (has: (index: number) => boolean, known: boolean) => void,
  onIndex: (index: number) => void,
): Promise<HaveSubscription> {
  const stream = await node.dialProtocol(peer, HAVE_PROTOCOL, { signal: AbortSignal.timeout(10_000) });
  const reader = new FrameReader(stream, LIMITS);
  await new FrameWriter(stream).write({ t: 'sub', manifest });
  const ended = (async () => {
    try {
      for await (const frame of reader) {
        const msg = parseHaveMessage(frame.header);
        if (msg.manifest !== manifest) throw new Error('have message for another manifest');
        if (msg.t === 'have') onBits(decodeHaveBits(msg.bits), msg.bits.length > 0);
        else onIndex(msg.index);
      }
    } catch {
      stream.abort(new Error('have subscription failed'));
    }
  })();
  return {
    ended,
    close: () => { stream.close().catch(() => stream.abort(new Error('closing have subscription'))); },
  };
}
