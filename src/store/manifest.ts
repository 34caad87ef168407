// Manifests: canonical JSON, ids, Ed25519 publisher keys, signing and strict verification.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import type { RuntimeMeta } from '../runtime/types.js';
import { versionProblem } from '../runtime/version-rule.js';
import { CHUNK_MAX } from './chunker.js';
import { assertNotFromTheFuture } from './clock.js';
import { CODECS, MANIFEST_SCHEMA, type ChunkRef, type Codec, type ContentRef, type EntryListRef, type Manifest, type SignedManifest } from './types.js';

/**
 * Deterministic JSON bytes: object keys sorted (by UTF-16 code units, JavaScript's default
 * sort) at every depth, no whitespace, object properties whose value is undefined dropped.
 * Anything that would not survive a JSON round trip unchanged is rejected rather than
 * silently altered: non-finite numbers, undefined inside arrays, bigint, functions, symbols,
 * and objects other than plain objects and arrays (a Date must be turned into a string first).
 */
export function canonicalJson(value: unknown): Buffer {
  return Buffer.from(canonicalText(value, '$'), 'utf8');
}

function canonicalText(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Error(`cannot encode ${path}: ${value} is not a finite number`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value
          .map((item, i) => {
            if (item === undefined) throw new Error(`cannot encode ${path}[${i}]: undefined inside an array`);
            return canonicalText(item, `${path}[${i}]`);
          })
          .join(',')}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new Error(`cannot encode ${path}: only plain objects and arrays are allowed`);
      }
      const record = value as Record<string, unknown>;
      const parts: string[] = [];
      for (const key of Object.keys(record).sort()) {
        if (record[key] === undefined) continue;
        parts.push(`${JSON.stringify(key)}:${canonicalText(record[key], `${path}.${key}`)}`);
      }
      return `{${parts.join(',')}}`;
    }
    default:
      throw new Error(`cannot encode ${path}: a ${typeof value} is not JSON`);
  }
}

/** Copies only the RuntimeMeta fields a manifest carries, so extra properties never leak in. */
function pickRuntimeMeta(meta: RuntimeMeta): RuntimeMeta {
  const out: RuntimeMeta = { name: meta.name, version: meta.version };
  if (meta.language !== undefined) out.language = meta.language;
  if (meta.description !== undefined) out.description = meta.description;
  if (meta.architectures !== undefined) out.architectures = [...meta.architectures];
  return out;
}

export function buildManifest(
  meta: RuntimeMeta,
  tree: { entries: EntryListRef; content: ContentRef },
  publisherPub: string,
  createdAt = new Date(),
): Manifest {
  const refs = (chunks: ChunkRef[]) => chunks.map((c) => ({ id: c.id, size: c.size, storedSize: c.storedSize, codec: c.codec }));
  const e = tree.entries;
  return {
    schema: MANIFEST_SCHEMA,
    runtime: pickRuntimeMeta(meta),
    entries: { count: e.count, size: e.size, sha256: e.sha256, chunks: refs(e.chunks) },
    content: { size: tree.content.size, chunks: refs(tree.content.chunks) },
    createdAt: createdAt.toISOString(),
    publisher: publisherPub,
  };
}

/**
 * Every chunk a host needs to install the manifest, in the order an install consumes them. Code outside
 * the store uses this instead of reading the manifest's chunk fields itself, so a schema change stays here.
 */
export function manifestChunks(m: Manifest): ChunkRef[] {
  return [...m.entries.chunks, ...m.content.chunks];
}

/** Bytes a host holds once it has every chunk of the manifest (uncompressed). */
export function manifestBytes(m: Manifest): number {
  return m.entries.size + m.content.size;
}

/** 'sha256:<hex>' of the manifest's canonical JSON bytes. */
export function manifestId(m: Manifest): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(m)).digest('hex');
}

// ---- keys ------------------------------------------------------------------------------

const PUBLIC_KEY_TEXT = /^ed25519:([0-9a-f]{64})$/;
/** DER prefix of an SPKI Ed25519 public key; the raw 32 key bytes follow it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function generatePublisherKeys(): { privatePem: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKey: publicKeyOf(privateKey),
  };
}

export function loadPrivateKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`publisher key is not a valid PEM private key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new Error(`publisher key is a ${key.asymmetricKeyType} key, but an ed25519 key is required`);
  }
  return key;
}

/** 'ed25519:<64 hex>' of a private (or public) key's raw public half. */
export function publicKeyOf(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return 'ed25519:' + der.subarray(der.length - 32).toString('hex');
}

export function parsePublicKey(s: string): KeyObject {
  const match = PUBLIC_KEY_TEXT.exec(s.trim().toLowerCase());
  if (!match) {
    throw new Error(`publisher public key ${JSON.stringify(s)} is not of the form ed25519:<64 hex digits>`);
  }
  return createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(match[1]!, 'hex')]),
    format: 'der',
    type: 'spki',
  });
}

// ---- signing and verification ------------------------------------------------------------

export function signManifest(m: Manifest, priv: KeyObject): SignedManifest {
  const signer = publicKeyOf(priv);
  if (signer !== m.publisher) {
    throw new Error(`manifest names publisher ${m.publisher} but the signing key is ${signer}`);
  }
  const bytes = canonicalJson(m);
  return {
    id: 'sha256:' + createHash('sha256').update(bytes).digest('hex'),
    manifest: m,
    signature: sign(null, bytes, priv).toString('base64'),
  };
}

const NAME = /^[a-z0-9][a-z0-9.-]{0,63}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const CHUNK_ID = /^sha256:[0-9a-f]{64}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Checks a manifest received from anywhere: exact shape, consistent sizes, id, signature and
 * trust. Returns it typed, or throws an Error whose message is one sentence naming the field.
 * `trusted` holds 'ed25519:<hex>' publisher keys.
 */
export function verifySignedManifest(sm: unknown, trusted: string[]): SignedManifest {
  const top = expectRecord(sm, 'signed manifest', ['id', 'manifest', 'signature'], []);
  const id = expectString(top.id, 'signed manifest id');
  if (!CHUNK_ID.test(id)) throw new Error(`signed manifest id ${JSON.stringify(id)} is not of the form sha256:<64 hex>`);
  const signature = expectString(top.signature, `manifest ${id} signature`);
  const m = checkManifestShape(top.manifest, id);

  const bytes = canonicalJson(m);
  const actualId = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
  if (actualId !== id) throw new Error(`manifest ${id} does not match its content, which hashes to ${actualId}`);

  const signatureBytes = Buffer.from(signature, 'base64');
  if (!BASE64.test(signature) || signatureBytes.length !== 64) {
    throw new Error(`manifest ${id} signature is not a base64 Ed25519 signature`);
  }
  if (!verify(null, bytes, parsePublicKey(m.publisher), signatureBytes)) {
    throw new Error(`manifest ${id} signature is invalid: it was not made by its publisher key ${m.publisher}`);
  }
  const trustedKeys = new Set(trusted.map((k) => k.trim().toLowerCase()));
  if (!trustedKeys.has(m.publisher)) {
    throw new Error(`manifest ${id} is signed by ${m.publisher} which is not a trusted publisher`);
  }
  assertNotFromTheFuture(m.createdAt, `manifest ${id} (${m.runtime.name}@${m.runtime.version})`);
  return { id, manifest: m, signature };
}

/** Largest entry list accepted from anyone: about 500,000 entries of long paths. */
export const MAX_ENTRY_LIST_BYTES = 128 * 1024 * 1024;
/** Most entries accepted in one manifest (the default package limit). */
const MAX_ENTRIES = 2_000_000;

function checkManifestShape(value: unknown, id: string): Manifest {
  const where = `manifest ${id}`;
  if (typeof value === 'object' && value !== null && 'schema' in value && (value as { schema: unknown }).schema !== MANIFEST_SCHEMA) {
    const schema = (value as { schema: unknown }).schema;
    if (schema === 1) {
      throw new Error(`${where} has schema 1 (one chunked tar, from joblet-agent 0.1), which this agent no longer installs: publish the package again with this version`);
    }
    throw new Error(`${where} has schema ${JSON.stringify(schema)}, but this agent understands schema ${MANIFEST_SCHEMA} only: upgrade joblet-agent on this host`);
  }
  const m = expectRecord(value, where, ['schema', 'runtime', 'entries', 'content', 'createdAt', 'publisher'], []);

  const runtime = expectRecord(m.runtime, `${where} runtime`, ['name', 'version'], ['language', 'description', 'architectures']);
  const name = expectString(runtime.name, `${where} runtime.name`);
  if (!NAME.test(name)) throw new Error(`${where} runtime.name ${JSON.stringify(name)} is not a valid runtime name`);
  const version = expectString(runtime.version, `${where} runtime.version`);
  if (versionProblem(version) !== null) {
    throw new Error(`${where} runtime.version ${JSON.stringify(version)} is not a valid version: it ${versionProblem(version)}`);
  }
  if (runtime.language !== undefined) expectString(runtime.language, `${where} runtime.language`);
  if (runtime.description !== undefined) expectString(runtime.description, `${where} runtime.description`);
  if (runtime.architectures !== undefined) {
    if (!Array.isArray(runtime.architectures)) throw new Error(`${where} runtime.architectures is not a list`);
    runtime.architectures.forEach((a, i) => expectString(a, `${where} runtime.architectures[${i}]`));
  }

  const entries = expectRecord(m.entries, `${where} entries`, ['count', 'size', 'sha256', 'chunks'], []);
  const count = expectSize(entries.count, `${where} entries.count`, MAX_ENTRIES);
  if (count === 0) throw new Error(`${where} entries.count is 0, but a runtime has at least its runtime.yml`);
  const listSize = expectSize(entries.size, `${where} entries.size`, MAX_ENTRY_LIST_BYTES);
  const listSha = expectString(entries.sha256, `${where} entries.sha256`);
  if (!SHA256_HEX.test(listSha)) throw new Error(`${where} entries.sha256 is not 64 lowercase hex digits`);
  checkChunkList(entries.chunks, `${where} entries.chunks`, listSize, 'entries.size');

  const content = expectRecord(m.content, `${where} content`, ['size', 'chunks'], []);
  const contentSize = expectSize(content.size, `${where} content.size`, Number.MAX_SAFE_INTEGER);
  checkChunkList(content.chunks, `${where} content.chunks`, contentSize, 'content.size');

  const createdAt = expectString(m.createdAt, `${where} createdAt`);
  if (!ISO_UTC.test(createdAt) || Number.isNaN(Date.parse(createdAt))) {
    throw new Error(`${where} createdAt ${JSON.stringify(createdAt)} is not an ISO 8601 UTC time`);
  }
  const publisher = expectString(m.publisher, `${where} publisher`);
  if (!PUBLIC_KEY_TEXT.test(publisher)) {
    throw new Error(`${where} publisher ${JSON.stringify(publisher)} is not of the form ed25519:<64 hex digits>`);
  }
  return value as Manifest;
}

function checkChunkList(list: unknown, at: string, expectedTotal: number, totalField: string): void {
  if (!Array.isArray(list)) throw new Error(`${at} is not a list`);
  let total = 0;
  list.forEach((c, i) => {
    const where = `${at}[${i}]`;
    const chunk = expectRecord(c, where, ['id', 'size', 'storedSize', 'codec'], []);
    const chunkId = expectString(chunk.id, `${where}.id`);
    if (!CHUNK_ID.test(chunkId)) throw new Error(`${where}.id ${JSON.stringify(chunkId)} is not of the form sha256:<64 hex>`);
    const size = expectSize(chunk.size, `${where}.size`, CHUNK_MAX);
    if (size === 0) throw new Error(`${where}.size is 0, but chunks are never empty`);
    const codec = expectString(chunk.codec, `${where}.codec`);
    if (!CODECS.includes(codec as Codec)) throw new Error(`${where}.codec ${JSON.stringify(codec)} is not one of ${CODECS.join(', ')}`);
    // Stored bytes are compressed only when that saves space, so they never exceed the size.
    const storedSize = expectSize(chunk.storedSize, `${where}.storedSize`, size);
    if (codec === 'raw' && storedSize !== size) throw new Error(`${where}.storedSize differs from its size although its codec is raw`);
    total += size;
  });
  if (total !== expectedTotal) throw new Error(`${at} sizes add up to ${total}, but ${totalField} is ${expectedTotal}`);
}

function expectRecord(
  value: unknown,
  what: string,
  required: string[],
  optional: string[],
): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what} is not an object`);
  const record = value as Record<string, unknown>;
  for (const key of required) if (!(key in record)) throw new Error(`${what} has no ${key} field`);
  for (const key of Object.keys(record)) {
    if (!required.includes(key) && !optional.includes(key)) throw new Error(`${what} has an unknown field ${JSON.stringify(key)}`);
  }
  return record;
}

function expectString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`${what} is not a string`);
  return value;
}

function expectSize(value: unknown, what: string, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${what} is not a non-negative integer`);
  }
  if (value > max) throw new Error(`${what} is ${value}, more than the limit ${max}`);
  return value;
}
