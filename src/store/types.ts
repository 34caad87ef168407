import type { RuntimeMeta } from '../runtime/types.js';

/** How a chunk's bytes are kept on disk and sent on the wire. */
export type Codec = 'raw' | 'deflate' | 'brotli' | 'zstd';

/** Every codec, in the order of their byte in a chunk file's header. */
export const CODECS: readonly Codec[] = ['raw', 'deflate', 'brotli', 'zstd'];

/** One content-defined chunk of a canonical tar stream. */
export interface ChunkRef {
  /** 'sha256:<hex>' of the uncompressed bytes. */
  id: string;
  /** Uncompressed size in bytes. */
  size: number;
  /** Size of the stored (possibly compressed) bytes. */
  storedSize: number;
  codec: Codec;
}

/**
 * 2: file contents chunked apart from the entry list (src/runtime/tree-entry.ts).
 * 1 (before 0.2): one chunked canonical tar; refused with a message saying to publish again.
 */
export const MANIFEST_SCHEMA = 2;

/** The entry list of a tree: one line per entry, chunked like any stream. */
export interface EntryListRef {
  /** Number of entries (lines). */
  count: number;
  /** Bytes of the list. */
  size: number;
  /** sha256 hex of the whole list. */
  sha256: string;
  chunks: ChunkRef[];
}

/** The file contents of a tree, in entry order, as one chunked stream. */
export interface ContentRef {
  size: number;
  chunks: ChunkRef[];
}

/** The signed description of one published runtime. Its id is sha256 of canonicalJson(manifest). */
export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  runtime: RuntimeMeta;
  entries: EntryListRef;
  content: ContentRef;
  /** ISO 8601. */
  createdAt: string;
  /** Publisher's Ed25519 public key, 'ed25519:<64 hex>'. */
  publisher: string;
}

export interface SignedManifest {
  /** 'sha256:<hex>' of the canonical JSON bytes of `manifest`. */
  id: string;
  manifest: Manifest;
  /** Ed25519 signature over the canonical JSON bytes, base64. */
  signature: string;
}

/** A runtime installed in the runtimes dir by this agent. This is also the `list --json` item. */
export interface InstallRecord {
  name: string;
  version: string;
  manifestId: string;
  path: string;
  sizeBytes: number;
  /** ISO 8601. */
  installedAt: string;
}

/** A chunk file whose bytes do not hash to its id. */
export class CorruptChunkError extends Error {
  override name = 'CorruptChunkError';
  constructor(readonly chunkId: string, detail: string) {
    super(`chunk ${chunkId} is corrupt: ${detail}`);
  }
}
