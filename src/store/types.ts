import type { RuntimeMeta } from '../runtime/types.js';

/** How a chunk's bytes are kept on disk and sent on the wire. */
export type Codec = 'raw' | 'deflate' | 'brotli';

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

export const MANIFEST_SCHEMA = 1;

/** The signed description of one published runtime. Its id is sha256 of canonicalJson(manifest). */
export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  runtime: RuntimeMeta;
  tar: { size: number; sha256: string };
  chunks: ChunkRef[];
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
