// Chunk files on disk, named by the sha256 of their uncompressed bytes.
//
// Layout: <dir>/<first 2 hex>/<remaining 62 hex>. Each file is a 12-byte header followed by
// the stored bytes exactly as they go on the wire:
//   0..3   magic "JBCK"
//   4      format version (1)
//   5      codec: 0 = raw, 1 = deflate (zlib deflateRaw, no zlib/gzip wrapper), 2 = brotli, 3 = zstd
//   6..7   zero
//   8..11  uncompressed size, uint32 little endian
// Keeping the codec in the file (not in the name) means has() is one stat and a chunk has a
// single possible path.
//
// Files are written to "<final name>.tmp-<pid>-<n>" in the same directory, then renamed, so a
// running reader never sees a partial chunk under its final name. Nothing is fsynced here: every
// read checks the header and the bytes against the id (serving too, after a restart), so a chunk
// that a power cut left empty, torn or missing costs a re-fetch, never a wrong byte. What must
// survive one is made durable by its caller with one syncfs: a publish before its manifest is
// indexed, an install before its tree is renamed into place (runtime/durable.ts). An fsync per
// chunk made every chunk write wait for the disk in a thread-pool slot, for no byte of safety.

import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, constants as zlibConstants, inflateRaw } from 'node:zlib';
import { CHUNK_MAX } from './chunker.js';
import { VerifiedChunks } from './chunk-trust.js';
import { RecentChunks } from './recent-chunks.js';
import { CODECS, CorruptChunkError, type ChunkRef, type Codec } from './types.js';
import { ZSTD_AVAILABLE, ZstdUnavailableError, zstdCompress, zstdDecompress } from './zstd.js';

const brotliCompressAsync = promisify(brotliCompress);
const brotliDecompressAsync = promisify(brotliDecompress);
const inflateRawAsync = promisify(inflateRaw);

const MAGIC = Buffer.from('JBCK', 'latin1');
const FORMAT_VERSION = 1;
export const CHUNK_HEADER_BYTES = 12;
const CODEC_BYTES: Record<Codec, number> = { raw: 0, deflate: 1, brotli: 2, zstd: 3 };
const CODEC_BY_BYTE: readonly Codec[] = CODECS;

/** What new chunks are compressed with: zstd where this Node has it (zstd.ts), brotli where not. */
export const NEW_CHUNK_CODEC: 'zstd' | 'brotli' = ZSTD_AVAILABLE ? 'zstd' : 'brotli';

/**
 * Without zstd, new chunks are compressed with brotli at quality 1. Measured on 1 MiB pieces of a 588 MB tar of
 * /usr/lib/jvm (2 cores, loaded machine): brotli q1 278 MB/s and 1.02x the gzip -6 size; deflateRaw
 * level 3 93 MB/s and 1.04x; brotli q2 166 MB/s and 0.97x. Compression is the publish hot spot, so
 * q1. Decoding: brotli 463 MB/s, inflate 556 MB/s. Deflate chunks are still read and accepted.
 */
export const DEFAULT_BROTLI_QUALITY = 1;

/**
 * The brotli decoder otherwise grows its ring buffer 128 KiB -> 256 KiB -> 512 KiB -> 1 MiB while it decodes a
 * chunk, copying it each time: 1.9 MB allocated per chunk instead of one 1 MiB buffer (the window, LGWIN 20).
 */
const BROTLI_DECODE_PARAMS = { [zlibConstants.BROTLI_DECODER_PARAM_DISABLE_RING_BUFFER_REALLOCATION]: 1 };

/** Stored bytes of the chunks written last, kept for serving (recent-chunks.ts): a few average chunks. */
export const RECENT_CHUNK_BYTES = 8 * 1024 * 1024;

/** Compressed bytes are kept only if they save at least this fraction of the raw size. */
const MIN_SAVING = 0.03;

const CHUNK_ID = /^sha256:([0-9a-f]{64})$/;
const SUBDIR_NAME = /^[0-9a-f]{2}$/;
const CHUNK_FILE_NAME = /^[0-9a-f]{62}$/;
const TEMP_FILE_NAME = /^[0-9a-f]{62}\.tmp-\d+-\d+$/;

/** Asked for a chunk this store does not hold. */
export class ChunkNotFoundError extends Error {
  override name = 'ChunkNotFoundError';
  readonly code = 'ENOENT';
  constructor(readonly chunkId: string, readonly path: string) {
    super(`chunk ${chunkId} is not in the store (no file ${path})`);
  }
}

/** A file found by scan(): a chunk, or a temp file left by an interrupted write. */
export interface ChunkFileEntry {
  kind: 'chunk' | 'temp';
  /** Set for kind 'chunk'. */
  id?: string;
  path: string;
  bytes: number;
  mtimeMs: number;
}

export interface StoredChunk {
  codec: Codec;
  /** The stored bytes (compressed if codec is not raw), without the file header. */
  data: Buffer;
  /** Uncompressed size. */
  size: number;
}

export function sha256Id(bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

export function isChunkId(id: string): boolean {
  return CHUNK_ID.test(id);
}

export class ChunkStore {
  private readonly madeDirs = new Set<string>();
  private readonly verified = new VerifiedChunks();
  /** What was written last, served from memory; public for its hit counts. */
  readonly recent = new RecentChunks(RECENT_CHUNK_BYTES);
  /** Told when a chunk file failed verification and was deleted, so that it can be fetched again. */
  onCorrupt?: (id: string, error: string) => void;
  private tempCounter = 0;

  constructor(
    readonly dir: string,
    private readonly brotliQuality = DEFAULT_BROTLI_QUALITY,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  /** The file that holds (or would hold) a chunk. Throws on a malformed id. */
  pathOf(id: string): string {
    const match = CHUNK_ID.exec(id);
    if (!match) throw new Error(`invalid chunk id ${JSON.stringify(id)}: expected sha256:<64 hex>`);
    const hex = match[1]!;
    return join(this.dir, hex.slice(0, 2), hex.slice(2));
  }

  /**
   * Stores uncompressed chunk bytes; compresses them when that pays. The store keeps `raw` (in `recent`) only
   * when it stores a new chunk uncompressed; otherwise `raw` is the caller's again once this resolves.
   */
  async put(raw: Buffer): Promise<{ ref: ChunkRef; created: boolean }> {
    const id = sha256Id(raw);
    const existing = await this.refIfPresent(id, true);
    if (existing) return { ref: existing, created: false };

    const compressed = NEW_CHUNK_CODEC === 'zstd' ? await zstdCompress(raw) : await brotliCompressAsync(raw, {
      params: {
        [zlibConstants.BROTLI_PARAM_QUALITY]: this.brotliQuality,
        [zlibConstants.BROTLI_PARAM_SIZE_HINT]: raw.length,
        // A 1 MiB window instead of 4 MiB: 16 MB less RSS with three compressions in flight, 0.2 % more bytes.
        [zlibConstants.BROTLI_PARAM_LGWIN]: 20,
      },
      // An output buffer as large as the input lets zlib finish in one thread-pool job; with the
      // default 16 KiB it hops back to the (busy) main thread after every 16 KiB of output.
      chunkSize: Math.max(64 * 1024, raw.length + 1024),
    });
    const compress = compressed.length <= raw.length * (1 - MIN_SAVING);
    const codec: Codec = compress ? NEW_CHUNK_CODEC : 'raw';
    const stored = compress ? compressed : raw;
    await this.writeChunkFile(id, codec, stored, raw.length);
    this.recent.add(id, { codec, data: stored, size: raw.length });
    return { ref: { id, size: raw.length, storedSize: stored.length, codec }, created: true };
  }

  /**
   * Stores a chunk received from a peer as-is (no recompression), after checking that it
   * decodes to `size` bytes hashing to `id`. Throws CorruptChunkError and writes nothing if not.
   */
  async putStored(id: string, codec: Codec, stored: Buffer, size: number): Promise<ChunkRef> {
    return (await this.receive(id, codec, stored, size)).ref;
  }

  /**
   * putStored, also handing back the verified uncompressed bytes, so they need not be decoded again. `own`: `raw`
   * is a buffer of its own that nothing here keeps (a decode; for a raw chunk it is `stored`, which the store
   * keeps for serving), so its holder may release it (release-bytes.ts) once done with it.
   */
  async receive(id: string, codec: Codec, stored: Buffer, size: number): Promise<{ ref: ChunkRef; raw: Buffer; own: boolean }> {
    const path = this.pathOf(id);
    if (!(codec in CODEC_BYTES)) throw new CorruptChunkError(id, `unknown codec ${JSON.stringify(codec)}`);
    // A peer sends zstd only to a node that said it reads it (ChunkGet.zstd): this one did not.
    if (codec === 'zstd' && !ZSTD_AVAILABLE) throw new CorruptChunkError(id, `a peer sent it zstd-compressed, which Node ${process.version} cannot decode and did not ask for`);
    // The size comes from a verified manifest, but bound it anyway: it sizes the inflate buffer.
    if (!Number.isSafeInteger(size) || size < 0 || size > CHUNK_MAX) {
      throw new CorruptChunkError(id, `claimed size ${size} is outside 0..${CHUNK_MAX}`);
    }
    const raw = await this.decodeAndVerify(id, codec, stored, size, `received from a peer, for ${path}`);
    const own = raw !== stored;
    const existing = await this.refIfPresent(id, true);
    if (existing) return { ref: existing, raw, own };
    await this.writeChunkFile(id, codec, stored, size);
    this.recent.add(id, { codec, data: stored, size });
    return { ref: { id, size, storedSize: stored.length, codec }, raw, own };
  }

  async has(id: string): Promise<boolean> {
    try {
      await stat(this.pathOf(id));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** The chunk's ref as stored here, or undefined if absent. */
  async ref(id: string): Promise<ChunkRef | undefined> {
    return this.refIfPresent(id, false);
  }

  /** The verified uncompressed bytes of a chunk. A file that fails verification is deleted (see drop). */
  async get(id: string): Promise<Buffer> {
    return (await this.read(id)).raw;
  }

  /** `get`, also saying whether the bytes are the caller's alone to release (`own`, as for `receive`). */
  async read(id: string): Promise<{ raw: Buffer; own: boolean }> {
    // An install reading back what its download just wrote: the kept bytes, if the file is still the one written.
    const recent = this.recent.peek(id);
    if (recent?.codec === 'raw' && (await this.stillWritten(id))) return { raw: recent.data, own: false };
    const { stored, info, path } = await this.readChunkFile(id);
    const raw = await this.decodeAndVerify(id, stored.codec, stored.data, stored.size, `file ${path}`).catch((err) => this.drop(id, info, err));
    this.verified.note(id, info);
    // A raw chunk's bytes are a view of the file's read buffer, which nothing else holds either; but they are
    // past its header, so releaseBytes would not free them: only decodes are released.
    return { raw, own: raw !== stored.data };
  }

  /**
   * The stored bytes and codec, as they go on the wire. Verified unless this process verified the same file,
   * unchanged, before (chunk-trust.ts): a host never serves bytes it has not checked since they were written.
   * A file that fails is deleted (see drop).
   */
  async getStored(id: string): Promise<StoredChunk> {
    const recent = this.recent.peek(id);
    const fromMemory = recent !== undefined && (await this.stillWritten(id));
    this.recent.count(fromMemory);
    if (fromMemory) return recent!;
    const { stored, info, path } = await this.readChunkFile(id);
    if (!this.verified.has(id, info)) {
      await this.decodeAndVerify(id, stored.codec, stored.data, stored.size, `file ${path}`).catch((err) => this.drop(id, info, err));
      this.verified.note(id, info);
    }
    return stored;
  }

  /**
   * Whether chunk `id`'s file is still one this process verified (or wrote) unchanged, so the bytes kept in
   * `recent` stand for it: one stat instead of reading the file. Any write, rename, chmod or utimes changes its
   * identity (chunk-trust.ts), and then the file is read and verified as usual. Drops the kept bytes when not.
   */
  private async stillWritten(id: string): Promise<boolean> {
    const info = await stat(this.pathOf(id)).catch(() => null);
    if (info && this.verified.has(id, info)) return true;
    this.recent.delete(id);
    return false;
  }

  private async readChunkFile(id: string): Promise<{ stored: StoredChunk; info: Stats; path: string }> {
    const path = this.pathOf(id);
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if (isNotFound(err)) throw new ChunkNotFoundError(id, path);
      throw err;
    }
    let file: Buffer;
    let info: Stats;
    try {
      info = await handle.stat();
      file = await handle.readFile();
    } finally {
      await handle.close();
    }
    let header;
    try {
      header = parseHeader(file, id, path);
    } catch (err) {
      return this.drop(id, info, err);
    }
    return { stored: { codec: header.codec, size: header.size, data: file.subarray(CHUNK_HEADER_BYTES) }, info, path };
  }

  /**
   * A chunk file failed verification: keeping it would make every later read fail and keep a good copy
   * from being stored (put and receive skip a chunk that is present), so it is deleted, unless the file was
   * replaced meanwhile, and onCorrupt is told so the chunk can be fetched again. Rethrows `err`.
   */
  private async drop(id: string, read: Stats, err: unknown): Promise<never> {
    if (err instanceof CorruptChunkError) {
      this.verified.forget(id);
      this.recent.delete(id);
      const now = await stat(this.pathOf(id)).catch(() => null);
      if (now && now.ino === read.ino && now.dev === read.dev) await unlink(this.pathOf(id)).catch(() => undefined);
      this.onCorrupt?.(id, err.message);
    }
    throw err;
  }

  async delete(id: string): Promise<void> {
    this.verified.forget(id);
    this.recent.delete(id);
    try {
      await unlink(this.pathOf(id));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Number of chunk files and their total size on disk (headers included). */
  async usage(): Promise<{ chunks: number; bytes: number }> {
    let chunks = 0;
    let bytes = 0;
    for await (const entry of this.scan()) {
      if (entry.kind !== 'chunk') continue;
      chunks++;
      bytes += entry.bytes;
    }
    return { chunks, bytes };
  }

  /** Ids of all chunks present. */
  async *list(): AsyncGenerator<string> {
    for await (const entry of this.scan()) if (entry.kind === 'chunk') yield entry.id!;
  }

  /**
   * Every file of this store: chunk files and temp files, nothing else. Names that do not
   * look like ours are skipped, so a GC built on this never touches foreign files.
   */
  async *scan(): AsyncGenerator<ChunkFileEntry> {
    let subdirs: string[];
    try {
      subdirs = await readdir(this.dir);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const sub of subdirs.sort()) {
      if (!SUBDIR_NAME.test(sub)) continue;
      const subPath = join(this.dir, sub);
      let names: string[];
      try {
        names = await readdir(subPath);
      } catch (err) {
        if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
        throw err;
      }
      for (const name of names.sort()) {
        const isChunk = CHUNK_FILE_NAME.test(name);
        if (!isChunk && !TEMP_FILE_NAME.test(name)) continue;
        const path = join(subPath, name);
        let info;
        try {
          info = await stat(path);
        } catch (err) {
          if (isNotFound(err)) continue; // removed meanwhile
          throw err;
        }
        if (!info.isFile()) continue;
        yield isChunk
          ? { kind: 'chunk', id: `sha256:${sub}${name}`, path, bytes: info.size, mtimeMs: info.mtimeMs }
          : { kind: 'temp', path, bytes: info.size, mtimeMs: info.mtimeMs };
      }
    }
  }

  /**
   * Reads the header of a present chunk. With `freshen`, bumps its mtime: a chunk that a
   * publish or download just reused is then protected by the GC's grace period until the
   * manifest that references it is in the index.
   */
  private async refIfPresent(id: string, freshen: boolean): Promise<ChunkRef | undefined> {
    const path = this.pathOf(id);
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    try {
      const header = Buffer.alloc(CHUNK_HEADER_BYTES);
      const { bytesRead } = await handle.read(header, 0, CHUNK_HEADER_BYTES, 0);
      const parsed = parseHeader(header.subarray(0, bytesRead), id, path);
      const info = await handle.stat();
      if (freshen) {
        const now = new Date();
        await handle.utimes(now, now);
      }
      return { id, size: parsed.size, storedSize: info.size - CHUNK_HEADER_BYTES, codec: parsed.codec };
    } finally {
      await handle.close();
    }
  }

  private async decodeAndVerify(
    id: string,
    codec: Codec,
    stored: Buffer,
    size: number,
    where: string,
  ): Promise<Buffer> {
    let raw: Buffer;
    if (codec === 'raw') {
      raw = stored;
    } else {
      // maxOutputLength stops a hostile peer's decompression bomb early. One byte more than the chunk in the
      // output buffer: with exactly `size`, zlib sees a full buffer, allocates a second one of the same size
      // and decodes again to learn that nothing follows (measured: 306 MB of extra allocations, and the GCs they
      // drive, for a 260 MB transfer).
      const opts = { maxOutputLength: Math.max(size, 1), chunkSize: Math.max(64 * 1024, size + 1) };
      try {
        raw = codec === 'zstd'
          ? await zstdDecompress(stored, size, `chunk ${id} (${where})`)
          : codec === 'brotli'
            ? await brotliDecompressAsync(stored, { ...opts, params: BROTLI_DECODE_PARAMS })
            : await inflateRawAsync(stored, opts);
      } catch (err) {
        // Not the chunk's fault: it is kept, and the error says what this Node lacks.
        if (err instanceof ZstdUnavailableError) throw err;
        throw new CorruptChunkError(id, `its ${codec} data does not decode to ${size} bytes (${(err as Error).message}; ${where})`);
      }
    }
    if (raw.length !== size) {
      throw new CorruptChunkError(id, `it decodes to ${raw.length} bytes instead of ${size} (${where})`);
    }
    const actual = sha256Id(raw);
    if (actual !== id) throw new CorruptChunkError(id, `its bytes hash to ${actual} (${where})`);
    return raw;
  }

  private async writeChunkFile(id: string, codec: Codec, stored: Buffer, size: number): Promise<void> {
    const path = this.pathOf(id);
    const subdir = path.slice(0, path.lastIndexOf('/'));
    if (!this.madeDirs.has(subdir)) {
      await mkdir(subdir, { recursive: true });
      this.madeDirs.add(subdir);
    }
    const header = Buffer.alloc(CHUNK_HEADER_BYTES);
    MAGIC.copy(header, 0);
    header[4] = FORMAT_VERSION;
    header[5] = CODEC_BYTES[codec];
    header.writeUInt32LE(size, 8);

    const temp = `${path}.tmp-${process.pid}-${this.tempCounter++}`;
    const handle = await open(temp, 'wx', 0o644);
    try {
      try {
        const { bytesWritten } = await handle.writev([header, stored]);
        if (bytesWritten !== header.length + stored.length) {
          // A regular file takes a short write only when its disk or quota is full: say so, so callers treat it as such.
          throw Object.assign(new Error(`short write to ${temp}: ${bytesWritten} of ${header.length + stored.length} bytes (ENOSPC: no space left)`), { code: 'ENOSPC' });
        }
      } finally {
        await handle.close();
      }
      await rename(temp, path);
      // Verified by the caller just before (put hashed it, receive checked it); the rename changed its ctime.
      const info = await stat(path).catch(() => null);
      if (info) this.verified.note(id, info);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }
}

function parseHeader(file: Buffer, id: string, path: string): { codec: Codec; size: number } {
  if (file.length < CHUNK_HEADER_BYTES || !file.subarray(0, 4).equals(MAGIC)) {
    throw new CorruptChunkError(id, `file ${path} has no valid chunk header`);
  }
  if (file[4] !== FORMAT_VERSION) {
    throw new CorruptChunkError(id, `file ${path} has unknown format version ${file[4]}`);
  }
  const codec = CODEC_BY_BYTE[file[5]!];
  if (!codec) throw new CorruptChunkError(id, `file ${path} has unknown codec byte ${file[5]}`);
  return { codec, size: file.readUInt32LE(8) };
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}
