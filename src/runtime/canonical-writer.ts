// The writing half of canonicalisation: every archive reader hands its entries, already normalised
// and stripped, to one CanonicalWriter, which checks them against the safety rules, captures
// runtime.yml, drops setuid/setgid and ownership, and passes them on to a TreeSink.
import { createHash } from 'node:crypto';
import tarStream from 'tar-stream';
import { EntryRules, type EntryType } from './entry-rules.js';
import { parseRuntimeYml } from './runtime-yml.js';
import type { TreeEntry, TreeSink } from './tree-entry.js';
import { PackageError, type PackageLimits, type RuntimeMeta } from './types.js';

/** Raised when a speculative strip of the first directory turns out wrong: read again with strip 'none'. */
export class StripGuessError extends Error {
  override name = 'StripGuessError';
}

export const NO_RUNTIME_YML =
  'could not detect runtime name: no runtime.yml at the archive root or under a single top-level directory';

const MAX_RUNTIME_YML_BYTES = 1024 * 1024;
// tar-stream writes mtime as a 32-bit number of seconds; keep it in the range it can express.
const MAX_MTIME_SECONDS = 2 ** 31 - 1;
const TYPE_BITS: Record<TreeEntry['type'], number> = { file: 0o100000, directory: 0o040000, symlink: 0o120000, link: 0o100000 };

export interface CanonicalEntry {
  /** Normalised, already stripped path; never ''. */
  path: string;
  type: EntryType;
  mode: number;
  mtime: Date;
  /** Data bytes (regular files only). */
  size: number;
  /** Symlink target (verbatim) or hardlink target (normalised, stripped). */
  linkname?: string;
  /** Regular file data: exactly `size` bytes. */
  data?: AsyncIterable<Buffer>;
}

export interface WriterSummary {
  meta: RuntimeMeta;
  runtimeYml: string;
  entries: number;
  unpackedBytes: number;
}

/**
 * Checks every entry against the safety rules, captures runtime.yml, hashes each file, and hands the
 * entries in their canonical form to a TreeSink: the chunk ingest and the staging extraction at publish,
 * or a tar packer (`TarPackSink`) where a canonical tar is wanted.
 */
export class CanonicalWriter {
  private readonly rules: EntryRules;
  private meta: RuntimeMeta | null = null;
  private runtimeYml = '';

  constructor(limits: Partial<PackageLimits> | undefined, private readonly sink: TreeSink) {
    this.rules = new EntryRules(limits);
  }

  get limits(): PackageLimits {
    return this.rules.limits;
  }

  async add(entry: CanonicalEntry): Promise<void> {
    const { path, type } = entry;
    this.rules.admit({ path, type, size: entry.size, linkTarget: type === 'link' ? entry.linkname : undefined });
    const isRuntimeYml = path === 'runtime.yml';
    if (isRuntimeYml && type !== 'file') {
      throw new PackageError(`runtime.yml must be a regular file, but the archive has it as a ${type === 'link' ? 'hardlink' : type}`);
    }
    if (type === 'symlink' && !entry.linkname) throw new PackageError(`symlink ${path} has an empty target`);
    const mode = entry.mode & 0o7777 & ~0o6000;
    const mtime = clampMtime(entry.mtime);
    const sink = this.sink;
    if (type === 'directory') {
      await sink.begin({ type, path, mode, mtime });
      await sink.end();
      return;
    }
    if (type === 'symlink') {
      await sink.begin({ type, path, mtime, target: entry.linkname! });
      await sink.end();
      return;
    }
    if (type === 'link') {
      await sink.begin({ type, path, target: entry.linkname! });
      await sink.end();
      return;
    }
    // Only regular files are left: EntryRules refuses every other type.
    await sink.begin({ type: 'file', path, mode, mtime, size: entry.size, sha256: '' });
    const hash = createHash('sha256');
    const captured: Buffer[] = [];
    let written = 0;
    for await (const chunk of entry.data ?? []) {
      written += chunk.length;
      if (written > entry.size) break;
      if (isRuntimeYml) {
        if (written > MAX_RUNTIME_YML_BYTES) throw new PackageError('runtime.yml is larger than 1 MiB');
        captured.push(chunk);
      }
      hash.update(chunk);
      await sink.write(chunk);
    }
    if (written !== entry.size) {
      throw new PackageError(`file ${path} has ${written > entry.size ? 'more' : 'fewer'} data bytes than its recorded size ${entry.size} (was it changed while being read?)`);
    }
    await sink.end(hash.digest('hex'));
    if (isRuntimeYml) {
      this.runtimeYml = Buffer.concat(captured).toString('utf8');
      this.meta = parseRuntimeYml(this.runtimeYml);
    }
  }

  /** Fails when no runtime.yml was seen at the root. */
  finish(): WriterSummary {
    if (this.meta === null) throw new PackageError(NO_RUNTIME_YML);
    return {
      meta: this.meta,
      runtimeYml: this.runtimeYml,
      entries: this.rules.entries,
      unpackedBytes: this.rules.unpackedBytes,
    };
  }
}

/** Packs a tree into a canonical tar (ustar, pax for long names, owner 0:0 with empty names). */
export class TarPackSink implements TreeSink {
  readonly pack = tarStream.pack();
  private current: { sink: NodeJS.WritableStream | null; finished: Promise<void> } | null = null;

  begin(e: TreeEntry): void {
    const header: Parameters<tarStream.Pack['entry']>[0] = {
      name: e.path,
      type: e.type,
      // The type bits keep a mode of 0 from being replaced by tar-stream's default; encoding masks them off.
      mode: ('mode' in e ? e.mode : 0o777) | TYPE_BITS[e.type]!,
      mtime: new Date(('mtime' in e ? e.mtime : 0) * 1000),
      size: e.type === 'file' ? e.size : 0,
      ...(e.type === 'symlink' || e.type === 'link' ? { linkname: e.target } : {}),
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
    };
    let entryDone!: (err?: Error | null) => void;
    const finished = new Promise<void>((ok, fail) => {
      entryDone = (err) => (err ? fail(err) : ok());
    });
    // Awaited in end(); this only keeps a failure that happens mid-write from counting as unhandled.
    finished.catch(() => {});
    const sink = this.pack.entry(header, entryDone);
    this.current = { sink: e.type === 'file' ? sink : null, finished };
  }

  async write(piece: Buffer): Promise<void> {
    const sink = this.current?.sink;
    if (sink && !sink.write(piece)) await drained(sink);
  }

  async end(): Promise<void> {
    const cur = this.current;
    this.current = null;
    if (!cur) return;
    cur.sink?.end();
    await cur.finished;
  }

  finalize(): void {
    this.pack.finalize();
  }
}

/** Whole seconds in the range a ustar header can hold. */
function clampMtime(mtime: Date): number {
  const seconds = Math.floor(mtime.getTime() / 1000);
  if (!Number.isFinite(seconds) || seconds < 0) return 0;
  return Math.min(seconds, MAX_MTIME_SECONDS);
}

/** Resolves once a writable wants more data; rejects if it closes first (the pack was destroyed). */
export function drained(stream: NodeJS.EventEmitter & { destroyed?: boolean }): Promise<void> {
  return new Promise((resolve, reject) => {
    // Destroyed already: 'close' has been emitted, or will be without our listener seeing it in time.
    if (stream.destroyed) {
      reject(new PackageError('the canonical tar stream was closed while an entry was being written'));
      return;
    }
    const cleanup = () => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new PackageError('the canonical tar stream was closed while an entry was being written'));
    };
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}

export interface StripCandidate {
  path: string;
  type: EntryType;
}

/**
 * For readers that see the whole entry list first (zip, directory): '' when runtime.yml is at the
 * root, 'X' when every entry lies under one directory X holding X/runtime.yml. Anything else cannot
 * be a runtime package, which is said before a single byte is produced.
 */
export function decideStrip(entries: StripCandidate[], strip: 'auto' | 'none'): string {
  if (entries.some((e) => e.path === 'runtime.yml')) return '';
  if (strip === 'auto') {
    const tops = new Set(entries.map((e) => e.path.split('/', 1)[0]!));
    if (tops.size === 1) {
      const [top] = tops as Set<string>;
      const topEntry = entries.find((e) => e.path === top);
      const isDir = topEntry === undefined || topEntry.type === 'directory';
      if (isDir && entries.some((e) => e.path === `${top}/runtime.yml`)) return top!;
    }
  }
  throw new PackageError(NO_RUNTIME_YML);
}

/** The path of `path` below the stripped directory; null for the stripped directory itself. */
export function stripPath(path: string, prefix: string): string | null {
  if (prefix === '') return path;
  if (path === prefix) return null;
  return path.slice(prefix.length + 1);
}
