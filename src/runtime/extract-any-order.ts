// Extraction of a tree whose content chunks arrive in any order: a swarm delivers the rarest chunks first, so
// an extraction that waited for the content stream's order waited for most of the download and then read most
// chunks back from the store (measured at 16 hosts: 36 - 45 s of a 49 - 54 s download spent waiting, about 200
// of 256 chunks read back). Here every arriving chunk is written at once:
//
// - `prepare` (once the entry list is in) checks every entry against the rules, then creates the directories,
//   the symlinks, the empty files, and every file whose bytes span more than one chunk (empty and writable).
// - `place(i, bytes)` writes each file's part of content chunk i: a file lying wholly inside the chunk is
//   created complete (through the small-file worker when small); a spanning file gets its piece at its offset.
// - A spanning file is finished when its last byte is in: hashed (pieces that arrived in the file's own order
//   were hashed on the way; the rest is read back, from the page cache), then given its owner, mode and mtime.
// - `finish` makes the hardlinks, in entry order, and sets the directories' attributes.
//
// Every file is still checked against its sha256 from the entry list before the tree can be renamed into
// place: the chunk hashes prove each chunk, the file hashes prove the reassembly.
//
// A list in which a later entry replaces an earlier one (allowed in a tar) is not extracted here: its meaning
// depends on order. `plan` returns null for it and the caller extracts in order instead.
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { EntryRules } from './entry-rules.js';
import { Extractor, installedMode, type DirAttributes, type ExtractOptions } from './extract.js';
import { SMALL_FILE_MAX } from './small-files.js';
import type { TreeEntry } from './tree-entry.js';
import { PackageError } from './types.js';

type FileEntry = Extract<TreeEntry, { type: 'file' }>;
type LinkEntry = Extract<TreeEntry, { type: 'link' }>;

/** A file with bytes, where they lie in the content stream, and for a spanning file how far it has got. */
interface ContentFile {
  entry: FileEntry;
  /** Offset of its first byte in the content stream. */
  start: number;
  /** Written in one go from the chunk that holds all of it. */
  whole: boolean;
  /** Spanning files: bytes not yet written. */
  remaining: number;
  /** Spanning files: the prefix hashed so far, from pieces that came in the file's own order. */
  hashedTo: number;
  hash: Hash | null;
  /** Spanning files: the open handle while pieces are still to come (at most MAX_OPEN files have one). */
  handle: Promise<FileHandle> | null;
  /** Spanning files: writes through `handle` not done yet. */
  writes: Set<Promise<void>>;
}

/** What `plan` found: the entries sorted into what `prepare`, `place` and `finish` do with them. */
export interface AnyOrderPlan {
  /** Directories, symlinks and empty files, in entry order. */
  structure: TreeEntry[];
  /** Files with bytes, in content order. */
  files: ContentFile[];
  links: LinkEntry[];
  entries: number;
  unpackedBytes: number;
}

/**
 * Checks `entries` against the rules and the content's size, and sorts them for an any-order extraction.
 * Returns null when an entry replaces an earlier one (extract those in order). Throws a PackageError for a
 * bad entry, and an Error when the sizes disagree with the manifest.
 */
export function planAnyOrder(entries: Iterable<TreeEntry>, chunkSizes: readonly number[], opts: ExtractOptions & { label: string; count: number; contentSize: number }): AnyOrderPlan | null {
  const rules = new EntryRules(opts.limits);
  const structure: TreeEntry[] = [];
  const files: ContentFile[] = [];
  const links: LinkEntry[] = [];
  // Chunk boundaries, to tell whole files from spanning ones.
  const ends: number[] = [];
  let sum = 0;
  for (const size of chunkSizes) ends.push((sum += size));
  let chunk = 0;
  let offset = 0;
  for (const e of entries) {
    const previous = rules.admit({
      path: e.path, type: e.type, size: e.type === 'file' ? e.size : 0, linkTarget: e.type === 'link' ? e.target : undefined,
    });
    if (previous !== undefined) return null;
    if (e.type === 'link') links.push(e);
    else if (e.type !== 'file' || e.size === 0) structure.push(e);
    else {
      while (chunk < ends.length && ends[chunk]! <= offset) chunk++;
      const end = offset + e.size;
      // A file past the content's end is reported below, with the sizes.
      const whole = chunk < ends.length && end <= ends[chunk]! && e.size <= SMALL_FILE_MAX;
      files.push({ entry: e, start: offset, whole, remaining: e.size, hashedTo: 0, hash: null, handle: null, writes: new Set() });
      offset = end;
    }
  }
  if (rules.entries !== opts.count) throw new Error(`the entry list of ${opts.label} holds ${rules.entries} entries, not the manifest's ${opts.count}`);
  if (offset !== opts.contentSize || sum !== opts.contentSize) {
    throw new Error(`the files of ${opts.label} use ${offset} bytes of content, not the manifest's ${opts.contentSize}`);
  }
  return { structure, files, links, entries: rules.entries, unpackedBytes: rules.unpackedBytes };
}

// Read-back of a spanning file's unhashed part: buffer size, and how many are kept for reuse.
const READ_BUFFER = 256 * 1024;
const KEPT_READ_BUFFERS = 8;
// Spanning files kept open between their pieces; beyond it the one written least recently is closed (and
// opened again for its next piece). Far below any descriptor limit.
const MAX_OPEN = 64;
// Writes in flight, counted as the bytes of the chunks their pieces belong to (which stay in memory until the
// write is done; a chunk with two pieces in flight counts twice): writes are not awaited one by one, since on a
// loaded host each round trip to the thread pool waits for the event loop. Kept small: the thread pool (4 threads)
// also serves the store's writes and reads, which should not queue behind a burst of tree writes.
const MAX_WRITE_BYTES = 4 * 1024 * 1024;

/**
 * Writes a planned tree into `destDir` (existing, empty) from content chunks in any order. A rejected call
 * leaves what was written for the caller to discard; call `abort()` then, so no background write outlives it.
 */
export class AnyOrderTreeWriter {
  private readonly dirs = new Map<string, DirAttributes>();
  private readonly extractor: Extractor;
  /** Content offset of each chunk's first byte, and one past the last chunk. */
  private readonly starts: number[] = [0];
  private readonly placed: boolean[];
  private placedCount = 0;
  private readonly readBuffers: Buffer[] = [];
  /** Spanning files with an open handle, least recently written first. */
  private readonly open = new Set<ContentFile>();
  /** Piece writes and handle closes in flight; they never reject (a failure is kept in `failure`). */
  private readonly writing = new Set<Promise<void>>();
  private writingBytes = 0;
  private failure: Error | null = null;
  private readonly maxOpen: number;

  constructor(destDir: string, private readonly plan: AnyOrderPlan, private readonly chunkSizes: readonly number[], private readonly label: string, opts: ExtractOptions & { maxOpen?: number } = {}) {
    this.maxOpen = opts.maxOpen ?? MAX_OPEN;
    this.extractor = new Extractor(destDir, opts.owner, this.dirs);
    for (const size of chunkSizes) this.starts.push(this.starts[this.starts.length - 1]! + size);
    this.placed = chunkSizes.map(() => false);
  }

  /** Creates everything that needs no content: directories, symlinks, empty files, the spanning files. */
  async prepare(): Promise<void> {
    const x = this.extractor;
    for (const e of this.plan.structure) {
      const mode = 'mode' in e ? installedMode(e.mode) : 0;
      if (e.type === 'directory') await x.directory(e.path, mode, new Date(e.mtime * 1000));
      else if (e.type === 'symlink') {
        if (!e.target) throw new PackageError(`symlink ${e.path} has an empty target`);
        await x.symlink(e.path, e.target, new Date(e.mtime * 1000), false);
      } else if (e.type === 'file') {
        const file = await x.openFile(e.path, mode, new Date(e.mtime * 1000), 0, false);
        await file.end();
      }
    }
    for (const f of this.plan.files) if (!f.whole) await x.placeFile(f.entry.path);
  }

  /**
   * Writes every file's part of content chunk `index`, whose verified bytes are `raw`. `done`, when given, is
   * called once nothing reads `raw` any more: every write from it finished (the caller may free it then).
   */
  async place(index: number, raw: Buffer, done?: () => void): Promise<void> {
    this.throwIfFailed();
    const cStart = this.starts[index];
    if (cStart === undefined || index >= this.chunkSizes.length) throw new Error(`internal: ${this.label} has no content chunk ${index}`);
    if (this.placed[index]) throw new Error(`internal: content chunk ${index} of ${this.label} was placed twice`);
    if (raw.length !== this.chunkSizes[index]) throw new Error(`content chunk ${index} of ${this.label} is ${raw.length} bytes, not the manifest's ${this.chunkSizes[index]}`);
    const cEnd = cStart + raw.length;
    const files = this.plan.files;
    const writes: Promise<void>[] = [];
    // The first file that ends after the chunk's start.
    let lo = 0;
    let hi = files.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const f = files[mid]!;
      if (f.start + f.entry.size <= cStart) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < files.length && files[i]!.start < cEnd; i++) {
      const f = files[i]!;
      const from = Math.max(f.start, cStart);
      const to = Math.min(f.start + f.entry.size, cEnd);
      const piece = raw.subarray(from - cStart, to - cStart);
      if (f.whole) await this.writeWhole(f, piece);
      else await this.writePiece(f, piece, from - f.start, raw.length, writes);
    }
    // A small file's bytes were copied into its batch by now; the pieces of spanning files are still being written.
    if (done) {
      if (writes.length === 0) done();
      else void Promise.all(writes).then(done);
    }
    this.placed[index] = true;
    this.placedCount++;
    while (this.writingBytes > MAX_WRITE_BYTES) await Promise.race(this.writing);
    this.throwIfFailed();
  }

  private async writeWhole(f: ContentFile, bytes: Buffer): Promise<void> {
    const e = f.entry;
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== e.sha256) throw new Error(`file ${e.path} of ${this.label} hashes to ${digest}, not the ${e.sha256} of its entry list`);
    const file = await this.extractor.openFile(e.path, installedMode(e.mode), new Date(e.mtime * 1000), e.size, false);
    await file.write(bytes);
    await file.end();
  }

  /**
   * `pins`: the bytes of the chunk `piece` is part of, which stay in memory until the write is done; the write
   * (which never rejects) is added to `writes`.
   */
  private async writePiece(f: ContentFile, piece: Buffer, at: number, pins: number, writes: Promise<void>[]): Promise<void> {
    if (at === f.hashedTo) {
      f.hash ??= createHash('sha256');
      f.hash.update(piece);
      f.hashedTo += piece.length;
    }
    const handle = this.handleFor(f);
    writes.push(this.track(f.writes, pins, handle.then(async (h) => {
      let done = 0;
      while (done < piece.length) done += (await h.write(piece, done, piece.length - done, at + done)).bytesWritten;
    })));
    f.remaining -= piece.length;
    if (f.remaining > 0) return;
    // The last piece is on its way: once every write is done, hash what was not hashed on the way, then the
    // file's owner, mode and mtime; in the background, through the same handle.
    this.open.delete(f);
    f.handle = null;
    const fileWrites = [...f.writes];
    const e = f.entry;
    await this.extractor.finishPlaced(e.path, handle, installedMode(e.mode), new Date(e.mtime * 1000), async (h) => {
      await Promise.all(fileWrites);
      this.throwIfFailed();
      await this.verify(f, h);
    });
  }

  /** The open handle of spanning file `f`, opening it (and closing the least recently written one) if need be. */
  private handleFor(f: ContentFile): Promise<FileHandle> {
    if (f.handle) {
      this.open.delete(f);
      this.open.add(f);
      return f.handle;
    }
    if (this.open.size >= this.maxOpen) {
      const [old] = this.open;
      this.open.delete(old!);
      const h = old!.handle!;
      old!.handle = null;
      const writes = [...old!.writes];
      this.track(null, 0, Promise.all(writes).then(async () => (await h).close()));
    }
    f.handle = this.extractor.openPlaced(f.entry.path);
    f.handle.catch(() => {}); // reported by the writes through it
    this.open.add(f);
    return f.handle;
  }

  /**
   * Keeps `work` in flight (in `into` too, when given), counting `bytes` until it is done; a failure is kept.
   * Returns its end, which never rejects.
   */
  private track(into: Set<Promise<void>> | null, bytes: number, work: Promise<unknown>): Promise<void> {
    const done: Promise<void> = work.then(
      () => {},
      (err: unknown) => {
        this.failure ??= err as Error;
      },
    ).then(() => {
      this.writing.delete(done);
      into?.delete(done);
      this.writingBytes -= bytes;
    });
    this.writing.add(done);
    into?.add(done);
    this.writingBytes += bytes;
    return done;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Hashes what was not hashed on the way in, and compares. */
  private async verify(f: ContentFile, handle: FileHandle): Promise<void> {
    const hash = f.hash ?? createHash('sha256');
    f.hash = null;
    if (f.hashedTo < f.entry.size) {
      const buffer = this.readBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER);
      try {
        let at = f.hashedTo;
        while (at < f.entry.size) {
          const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, f.entry.size - at), at);
          if (bytesRead === 0) throw new Error(`file ${f.entry.path} of ${this.label} ends after ${at} of ${f.entry.size} bytes`);
          hash.update(buffer.subarray(0, bytesRead));
          at += bytesRead;
        }
      } finally {
        if (this.readBuffers.length < KEPT_READ_BUFFERS) this.readBuffers.push(buffer);
      }
    }
    const digest = hash.digest('hex');
    if (digest !== f.entry.sha256) throw new Error(`file ${f.entry.path} of ${this.label} hashes to ${digest}, not the ${f.entry.sha256} of its entry list`);
  }

  /** Once every chunk is placed: the hardlinks, then the directories' attributes. */
  async finish(): Promise<{ entries: number; unpackedBytes: number }> {
    if (this.placedCount !== this.chunkSizes.length) {
      throw new Error(`internal: ${this.placedCount} of ${this.chunkSizes.length} content chunks of ${this.label} were placed`);
    }
    try {
      while (this.writing.size > 0) await Promise.all(this.writing);
      this.throwIfFailed();
      for (const l of this.plan.links) await this.extractor.hardlink(l.path, l.target, false);
      await this.extractor.finishDirectories();
    } finally {
      await this.extractor.close();
    }
    return { entries: this.plan.entries, unpackedBytes: this.plan.unpackedBytes };
  }

  async abort(): Promise<void> {
    for (const f of this.open) this.track(null, 0, Promise.all([...f.writes]).then(async () => (await f.handle!).close()));
    this.open.clear();
    while (this.writing.size > 0) await Promise.all(this.writing);
    await this.extractor.settle().catch(() => {});
    await this.extractor.close();
  }
}
