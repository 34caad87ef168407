import { noise, type NoiseComponents, type NoiseExtensions } from '@chainsafe/libp2p-noise';
import type { ConnectionEncrypter, SecuredConnection } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { releaseBytes } from '../../store/release-bytes.js';

type NoiseInit = Parameters<typeof noise>[0];

/** Noise transport messages are at most 65535 bytes on the wire, 16 of them the ChaCha20-Poly1305 tag. */
const MAX_PLAINTEXT = 65535 - 16;

/** What libp2p-noise's encrypted connection has that this module relies on (not part of its typed API). */
interface EncryptingStream {
  handshake: { encrypt(plaintext: Uint8Array | Uint8ArrayList): Uint8Array | Uint8ArrayList };
  encrypt(chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList;
}

/** The length-prefix decoder of libp2p-noise's encrypted stream (@libp2p/utils' LengthPrefixedDecoder). */
export interface MessageDecoder {
  lengthDecoder(data: Uint8Array | Uint8ArrayList): number;
  maxDataLength: number;
}

function isEncryptingStream(conn: unknown): conn is EncryptingStream {
  const c = conn as Partial<EncryptingStream> | null;
  return typeof c?.encrypt === 'function' && typeof c.handshake?.encrypt === 'function';
}

/**
 * Encrypt `chunk` as libp2p-noise does (one transport message per 65519 plaintext bytes, each behind its 2-byte
 * big-endian length) but into ONE buffer. libp2p-noise returns every message as separate pieces (length,
 * ciphertext pieces, tag) and the TCP transport writes each piece with its own `socket.write`; with TCP_NODELAY
 * each piece written to an idle socket is a syscall and a segment of its own (2, 12, 16 bytes...). Sending 4 MiB
 * took 209 writes that way and takes 6 this way (test/noise-writes.test.ts).
 *
 * The ciphertext pieces are the cipher's fresh output, which nothing else holds once copied: they are freed at
 * once (release-bytes.ts) instead of at the next full GC, which V8 starts after every ~64 MB of such memory.
 * Each host of a swarm sends about a package's worth. Measured (16 hosts, the JDK, one run each): 10.5 full GCs
 * per receiving host against 11.9.
 */
export function encryptCoalesced(stream: EncryptingStream, chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList {
  const sealed: { ciphertext: Uint8Array | Uint8ArrayList; own: boolean }[] = [];
  let total = 0;
  for (let i = 0; i < chunk.byteLength; i += MAX_PLAINTEXT) {
    const end = Math.min(i + MAX_PLAINTEXT, chunk.byteLength);
    const plaintext = chunk instanceof Uint8Array ? chunk.subarray(i, end) : chunk.sublist(i, end);
    const ciphertext = stream.handshake.encrypt(plaintext);
    // Without keys (never after the handshake) libp2p-noise hands the plaintext back, which is not ours to free.
    sealed.push({ ciphertext, own: ciphertext !== plaintext });
    total += 2 + ciphertext.byteLength;
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const { ciphertext, own } of sealed) {
    out.writeUInt16BE(ciphertext.byteLength, at);
    at += 2;
    for (const piece of ciphertext instanceof Uint8Array ? [ciphertext] : ciphertext) {
      out.set(piece, at);
      at += piece.byteLength;
      if (own) releaseBytes(piece);
    }
  }
  return new Uint8ArrayList(out);
}

function messageDecoderOf(conn: unknown): MessageDecoder | undefined {
  const d = (conn as { decoder?: Partial<MessageDecoder> } | null)?.decoder;
  return typeof d?.lengthDecoder === 'function' && typeof d.maxDataLength === 'number' ? (d as MessageDecoder) : undefined;
}

/**
 * A Noise length prefix that never throws. libp2p-noise's decoder asks for the next message's length after every
 * socket read, and its length function throws a RangeError when fewer than 2 bytes are buffered, which the
 * decoder catches as "wait for more". Every read that ends on a message boundary (most of them) so built an
 * Error with a stack trace: about 35 us each, 15 % of the CPU of sending small messages (have1, gossip,
 * requests) between two agents. Answering `maxDataLength` instead ends the decoder's loop the same way: the
 * message it implies (2 + maxDataLength bytes) is longer than the under-2 bytes buffered, and it is not over
 * the limit the decoder rejects.
 */
export function lengthWithoutThrowing(decoder: MessageDecoder): (data: Uint8Array | Uint8ArrayList) => number {
  return (data) => {
    if (data.byteLength < 2) return decoder.maxDataLength;
    return data instanceof Uint8Array ? (data[0] << 8) | data[1] : (data.get(0) << 8) | data.get(1);
  };
}

/**
 * Give a secured connection the one-buffer encryption and the non-throwing length decoding, each where
 * libp2p-noise's stream has what it needs (a part it lacks keeps the library's own behaviour); false unless both.
 */
export function coalesceNoiseWrites(conn: unknown): boolean {
  const decoder = messageDecoderOf(conn);
  if (decoder !== undefined) decoder.lengthDecoder = lengthWithoutThrowing(decoder);
  if (isEncryptingStream(conn)) conn.encrypt = (chunk) => encryptCoalesced(conn, chunk);
  return decoder !== undefined && isEncryptingStream(conn);
}

/**
 * libp2p-noise with one socket write per muxer frame (see encryptCoalesced). The bytes on the wire are the same
 * Noise transport messages, so peers running stock libp2p-noise read them unchanged. If a libp2p-noise release
 * no longer has the internals this relies on, connections still work, with the library's writes; `onFallback`
 * is told once (the daemon logs it).
 */
export function noiseWithCoalescedWrites(
  init: NoiseInit,
  onFallback: () => void = () => {},
): (components: NoiseComponents) => ConnectionEncrypter<NoiseExtensions> {
  const factory = noise(init);
  let warned = false;
  const patch = <T extends SecuredConnection<NoiseExtensions>>(secured: T): T => {
    if (!coalesceNoiseWrites(secured.connection) && !warned) {
      warned = true;
      onFallback();
    }
    return secured;
  };
  return (components) => {
    const encrypter = factory(components);
    const secureOutbound = encrypter.secureOutbound.bind(encrypter);
    const secureInbound = encrypter.secureInbound.bind(encrypter);
    encrypter.secureOutbound = async (connection, options) => patch(await secureOutbound(connection, options));
    encrypter.secureInbound = async (connection, options) => patch(await secureInbound(connection, options));
    return encrypter;
  };
}
