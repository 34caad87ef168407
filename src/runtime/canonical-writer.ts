// The writing half of canonicalisation: every archive reader hands its entries, already normalised
// and stripped, to one CanonicalWriter, which checks them against the safety rules, captures
// runtime.yml and packs them with tar-stream in the canonical form (ustar, pax for long names,
// owner 0:0 with empty names, no setuid/setgid).
import tarStream from 'tar-stream';
import { EntryRules, type EntryType } from './entry-rules.js';
import { parseRuntimeYml } from './runtime-yml.js';
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
const TYPE_BITS: Record<string, number> = { file: 0o100000, directory: 0o040000, symlink: 0o120000, link: 0o100000 };

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

export class CanonicalWriter {
  readonly pack = tarStream.pack();
  private readonly rules: EntryRules;
  private meta: RuntimeMeta | null = null;
  private runtimeYml = '';

  constructor(limits?: Partial<PackageLimits>) {
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

    const header: Parameters<tarStream.Pack['entry']>[0] = {
      name: path,
      type: type as tarStream.Header['type'],
      // The type bits keep a mode of 0 from being replaced by tar-stream's default; encoding masks them off.
      mode: (entry.mode & 0o7777 & ~0o6000) | (TYPE_BITS[type] ?? 0),
      mtime: clampMtime(entry.mtime),
      size: type === 'file' ? entry.size : 0,
      ...(type === 'symlink' || type === 'link' ? { linkname: entry.linkname } : {}),
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
    };
    let entryDone!: (err?: Error | null) => void;
    const finished = new Promise<void>((ok, fail) => {
      entryDone = (err) => (err ? fail(err) : ok());
    });
    // Awaited below; this only keeps a failure that happens mid-write from counting as unhandled.
    finished.catch(() => {});
    const sink = this.pack.entry(header, entryDone);
    if (type !== 'file') {
      await finished;
      return;
    }

    const captured: Buffer[] = [];
    let written = 0;
    for await (const chunk of entry.data ?? []) {
      written += chunk.length;
      if (written > entry.size) break;
      if (isRuntimeYml) {
        if (written > MAX_RUNTIME_YML_BYTES) throw new PackageError('runtime.yml is larger than 1 MiB');
        captured.push(chunk);
      }
      if (!sink.write(chunk)) await drained(sink);
    }
    if (written !== entry.size) {
      throw new PackageError(`file ${path} has ${written > entry.size ? 'more' : 'fewer'} data bytes than its recorded size ${entry.size} (was it changed while being read?)`);
    }
    sink.end(undefined);
    await finished;
    if (isRuntimeYml) {
      this.runtimeYml = Buffer.concat(captured).toString('utf8');
      this.meta = parseRuntimeYml(this.runtimeYml);
    }
  }

  /** Ends the tar stream; fails when no runtime.yml was seen at the root. */
  finish(): WriterSummary {
    if (this.meta === null) throw new PackageError(NO_RUNTIME_YML);
    this.pack.finalize();
    return {
      meta: this.meta,
      runtimeYml: this.runtimeYml,
      entries: this.rules.entries,
      unpackedBytes: this.rules.unpackedBytes,
    };
  }
}

function clampMtime(mtime: Date): Date {
  const seconds = Math.floor(mtime.getTime() / 1000);
  if (!Number.isFinite(seconds) || seconds < 0) return new Date(0);
  return new Date(Math.min(seconds, MAX_MTIME_SECONDS) * 1000);
}

/** Resolves once a writable wants more data; rejects if it closes first (the pack was destroyed). */
export function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
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
