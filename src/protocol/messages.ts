/**
 * JSON messages carried in frame headers (see frames.ts), with strict validators.
 *
 * Every message from a peer goes through a validator before use: unknown kinds, missing or extra fields,
 * wrong types and out-of-range numbers are refused with a MessageError naming the field.
 */
import { CODECS, type Codec } from '../store/types.js';

/** Largest uncompressed chunk the chunker emits (DESIGN.md: max 4 MiB). */
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;
/**
 * Largest stored chunk accepted on the wire. The store keeps a chunk compressed only when that saves space,
 * so stored bytes never exceed the chunk size; the margin tolerates codec framing overhead.
 */
export const MAX_STORED_CHUNK_SIZE = MAX_CHUNK_SIZE + 64 * 1024;
/** Largest 'have' bitfield: one bit per chunk, 2^20 chunks is a 1 TiB runtime at the 1 MiB average. */
export const MAX_HAVE_BITS = 1 << 20;
/** Request ids are echoed back; keeping them in u32 range keeps them exact in JSON everywhere. */
export const MAX_RID = 0xffff_ffff;

const CONTENT_ID = /^sha256:[0-9a-f]{64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Client -> server on '/joblet-agent/chunks/1': ask for one chunk. */
export interface ChunkGet {
  t: 'get';
  rid: number;
  id: string;
  /**
   * Set by a requester whose Node decodes zstd (store/zstd.ts). Without it a server holding the chunk as zstd
   * sends it decoded, codec raw: a node on Node 20 can still fetch from the rest of the fleet.
   */
  zstd?: true;
}

/** Server -> client: the chunk follows as the frame payload, `len` stored bytes in `codec`. */
export interface ChunkHit {
  t: 'chunk';
  rid: number;
  id: string;
  codec: Codec;
  /** Uncompressed size. */
  size: number;
  /** Stored bytes in the payload. */
  len: number;
}

/** Server -> client: this peer does not hold the chunk. */
export interface ChunkMiss {
  t: 'miss';
  rid: number;
  id: string;
}

/** Server -> client: this peer is at its upload cap; ask another holder. */
export interface ChunkBusy {
  t: 'busy';
  rid: number;
}

export type ChunkRequestMessage = ChunkGet;
export type ChunkResponseMessage = ChunkHit | ChunkMiss | ChunkBusy;

/** Which chunks of a manifest a peer holds: bit i (MSB first in each byte) set = chunk i present. */
export interface HaveBitfield {
  t: 'have';
  manifest: string;
  /** Base64 of the bitfield bytes. */
  bits: string;
}

/** A peer gained chunk `index` of a manifest (incremental update after a 'have'). */
export interface HaveOne {
  t: 'have1';
  manifest: string;
  index: number;
}

/**
 * The peer has just asked a source for chunk `index` of a manifest, which it believes only one peer holds. Sent only
 * to a subscriber whose `sub` carried `hints: true`, so agents that predate it never see it. A hint, not a promise:
 * the chunk ranks as less rare until the peer's `have1` of it arrives or the hint times out.
 */
export interface HaveFetching {
  t: 'fetching';
  manifest: string;
  index: number;
}

export type HaveMessage = HaveBitfield | HaveOne | HaveFetching;

/** A message from a peer is malformed; the text names the offending field. */
export class MessageError extends Error {
  override name = 'MessageError';
}

type Fields = Record<string, unknown>;

function expectObject(value: unknown, what: string): Fields {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new MessageError(`${what} is not a JSON object`);
  }
  return value as Fields;
}

function expectKeys(fields: Fields, kind: string, keys: readonly string[]): void {
  for (const key of Object.keys(fields)) {
    if (!keys.includes(key)) throw new MessageError(`'${kind}' message has unexpected field '${key}'`);
  }
}

function expectInt(fields: Fields, kind: string, key: string, max: number): number {
  const value = fields[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new MessageError(`'${kind}' message field '${key}' must be an integer in 0..${max}`);
  }
  return value;
}

function expectContentId(fields: Fields, kind: string, key: string): string {
  const value = fields[key];
  if (typeof value !== 'string' || !CONTENT_ID.test(value)) {
    throw new MessageError(`'${kind}' message field '${key}' must be 'sha256:' followed by 64 lowercase hex digits`);
  }
  return value;
}

function expectCodec(fields: Fields, kind: string, key: string): Codec {
  const value = fields[key];
  if (typeof value !== 'string' || !(CODECS as readonly string[]).includes(value)) {
    throw new MessageError(`'${kind}' message field '${key}' must be one of ${CODECS.join(', ')}`);
  }
  return value as Codec;
}

function kindOf(fields: Fields, allowed: readonly string[], what: string): string {
  const t = fields.t;
  if (typeof t !== 'string' || !allowed.includes(t)) {
    throw new MessageError(`${what} has unknown kind ${JSON.stringify(t)}; expected one of ${allowed.join(', ')}`);
  }
  return t;
}

/** Validate a request read by the chunk server. */
export function parseChunkRequest(value: unknown): ChunkRequestMessage {
  const fields = expectObject(value, 'chunk request');
  kindOf(fields, ['get'], 'chunk request');
  expectKeys(fields, 'get', ['t', 'rid', 'id', 'zstd']);
  const get: ChunkGet = { t: 'get', rid: expectInt(fields, 'get', 'rid', MAX_RID), id: expectContentId(fields, 'get', 'id') };
  if (fields.zstd !== undefined) {
    if (fields.zstd !== true) throw new MessageError(`'get' message field 'zstd' must be true when present`);
    get.zstd = true;
  }
  return get;
}

/** Validate a response read by the chunk client. */
export function parseChunkResponse(value: unknown): ChunkResponseMessage {
  const fields = expectObject(value, 'chunk response');
  const kind = kindOf(fields, ['chunk', 'miss', 'busy'], 'chunk response');
  switch (kind) {
    case 'chunk': {
      expectKeys(fields, kind, ['t', 'rid', 'id', 'codec', 'size', 'len']);
      return {
        t: 'chunk',
        rid: expectInt(fields, kind, 'rid', MAX_RID),
        id: expectContentId(fields, kind, 'id'),
        codec: expectCodec(fields, kind, 'codec'),
        size: expectInt(fields, kind, 'size', MAX_CHUNK_SIZE),
        len: expectInt(fields, kind, 'len', MAX_STORED_CHUNK_SIZE),
      };
    }
    case 'miss':
      expectKeys(fields, kind, ['t', 'rid', 'id']);
      return { t: 'miss', rid: expectInt(fields, kind, 'rid', MAX_RID), id: expectContentId(fields, kind, 'id') };
    default:
      expectKeys(fields, kind, ['t', 'rid']);
      return { t: 'busy', rid: expectInt(fields, kind, 'rid', MAX_RID) };
  }
}

/** Validate a 'have', 'have1' or 'fetching' message. */
export function parseHaveMessage(value: unknown): HaveMessage {
  const fields = expectObject(value, 'have message');
  const kind = kindOf(fields, ['have', 'have1', 'fetching'], 'have message');
  if (kind === 'have1' || kind === 'fetching') {
    expectKeys(fields, kind, ['t', 'manifest', 'index']);
    return {
      t: kind,
      manifest: expectContentId(fields, kind, 'manifest'),
      index: expectInt(fields, kind, 'index', MAX_HAVE_BITS - 1),
    };
  }
  expectKeys(fields, kind, ['t', 'manifest', 'bits']);
  const bits = fields.bits;
  if (typeof bits !== 'string' || !BASE64.test(bits)) {
    throw new MessageError(`'have' message field 'bits' must be standard padded base64`);
  }
  if ((bits.length / 4) * 3 > MAX_HAVE_BITS / 8 + 2) {
    throw new MessageError(`'have' message field 'bits' exceeds ${MAX_HAVE_BITS} bits`);
  }
  return { t: 'have', manifest: expectContentId(fields, kind, 'manifest'), bits };
}

/** Build a 'have' bitfield from the indexes of the chunks held, for a manifest of `count` chunks. */
export function encodeHaveBits(count: number, held: Iterable<number>): string {
  if (count > MAX_HAVE_BITS) throw new RangeError(`a manifest of ${count} chunks exceeds ${MAX_HAVE_BITS}`);
  const bytes = Buffer.alloc(Math.ceil(count / 8));
  for (const index of held) {
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new RangeError(`chunk index ${index} is outside 0..${count - 1}`);
    }
    bytes[index >> 3]! |= 0x80 >> (index & 7);
  }
  return bytes.toString('base64');
}

/** Decode a validated 'have' bitfield into a predicate over chunk indexes. */
export function decodeHaveBits(bits: string): (index: number) => boolean {
  const bytes = Buffer.from(bits, 'base64');
  return (index) => index >= 0 && index >> 3 < bytes.length && (bytes[index >> 3]! & (0x80 >> (index & 7))) !== 0;
}
