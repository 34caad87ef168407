// The safety rules for archive entries, shared by the canonicaliser (publish time) and the extractor
// (install time, including tars received from peers). Both feed entries in archive order; the rules
// keep just enough state (what kind of thing each earlier path is) to judge the next entry.
import { PackageError, type PackageLimits, DEFAULT_LIMITS } from './types.js';

/** Entry kinds as tar-stream names them; anything not listed in `SAFE_TYPES` is refused. */
export type EntryType = 'file' | 'directory' | 'symlink' | 'link' | string;

/** What an admitted path is on disk. A hardlink takes the kind of its target. */
export type PathKind = 'file' | 'directory' | 'symlink';

export interface RuleEntry {
  /** Normalised path (see `normaliseEntryPath`), never ''. */
  path: string;
  type: EntryType;
  /** Bytes of file data; only counted for regular files. */
  size: number;
  /** Normalised hardlink target (type 'link' only). */
  linkTarget?: string;
}

const SPECIAL_NAMES: Record<string, string> = {
  'character-device': 'a character device',
  'block-device': 'a block device',
  fifo: 'a fifo',
  socket: 'a socket',
};

/**
 * Turns an archive path into the canonical relative form: no leading './' or '/', no '.' components,
 * no repeated or trailing slashes. Returns '' for the root itself. Refuses absolute paths and any
 * '..' component (even one that stays inside: the canonical form has no way to spell it).
 */
export function normaliseEntryPath(raw: string, what = 'entry'): string {
  if (raw.includes('\0')) throw new PackageError(`${what} ${JSON.stringify(raw)} contains a NUL character`);
  if (raw.startsWith('/')) throw new PackageError(`${what} ${raw} escapes the runtime root`);
  const parts: string[] = [];
  let depth = 0;
  let sawDotDot = false;
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      sawDotDot = true;
      depth--;
      if (depth < 0) throw new PackageError(`${what} ${raw} escapes the runtime root`);
      continue;
    }
    depth++;
    parts.push(part);
  }
  if (sawDotDot) throw new PackageError(`${what} ${raw} contains a '..' component`);
  return parts.join('/');
}

/** Normalised and stripped like entry paths; a target outside the stripped directory stays as is (and fails the rules). */
export function hardlinkTarget(path: string, raw: string, prefix: string): string {
  let target: string;
  try {
    target = normaliseEntryPath(raw);
  } catch {
    throw new PackageError(`hardlink ${path} points to ${raw}, which escapes the runtime root`);
  }
  if (prefix !== '' && target.startsWith(`${prefix}/`)) return target.slice(prefix.length + 1);
  return target;
}

/** Limits as given, with defaults for anything missing. */
export function limitsOf(limits?: Partial<PackageLimits>): PackageLimits {
  return { ...DEFAULT_LIMITS, ...(limits ?? {}) };
}

export class EntryRules {
  readonly limits: PackageLimits;
  entries = 0;
  unpackedBytes = 0;
  // Every admitted path and its kind: hardlink targets may be any earlier entry, and symlinks anywhere
  // above a later path must be found. Implicit parent directories are not recorded (they are not links).
  private readonly kinds = new Map<string, PathKind>();

  constructor(limits?: Partial<PackageLimits>) {
    this.limits = limitsOf(limits);
  }

  kindOf(path: string): PathKind | undefined {
    return this.kinds.get(path);
  }

  /**
   * Checks one entry against every rule and records it. Returns the kind the path had before this
   * entry (undefined when new), so an extractor knows it must replace an earlier file.
   */
  admit(entry: RuleEntry): PathKind | undefined {
    const { path, type } = entry;
    if (path === '') throw new PackageError('an entry names the runtime root itself as a non-directory');

    this.entries++;
    if (this.entries > this.limits.maxEntries) {
      throw new PackageError(`package has more than ${this.limits.maxEntries} entries (the limit), reached at entry ${path}`);
    }

    const kind = this.kindFor(entry);
    this.checkParents(path);

    const previous = this.kinds.get(path);
    if (previous === 'symlink') {
      throw new PackageError(`entry ${path} would overwrite a symlink the archive created earlier`);
    }
    if (previous === 'directory' && kind !== 'directory') {
      throw new PackageError(`entry ${path} would replace a directory the archive created earlier`);
    }
    if (previous === 'file' && kind === 'directory') {
      throw new PackageError(`entry ${path} would replace a file the archive created earlier with a directory`);
    }

    if (type === 'file') {
      this.unpackedBytes += entry.size;
      if (this.unpackedBytes > this.limits.maxUnpackedBytes) {
        throw new PackageError(
          `package unpacks to more than ${this.limits.maxUnpackedBytes} bytes (the limit), reached at entry ${path}`,
        );
      }
    }
    this.kinds.set(path, kind);
    return previous;
  }

  private kindFor(entry: RuleEntry): PathKind {
    switch (entry.type) {
      case 'file':
        return 'file';
      case 'directory':
        return 'directory';
      case 'symlink':
        return 'symlink';
      case 'link':
        return this.hardlinkKind(entry);
    }
    const special = SPECIAL_NAMES[entry.type];
    if (special) {
      throw new PackageError(`entry ${entry.path} is ${special}; device, fifo and socket entries are refused`);
    }
    throw new PackageError(`entry ${entry.path} has an unsupported type (${entry.type ?? 'unknown'}); only files, directories, symlinks and hardlinks are accepted`);
  }

  private hardlinkKind(entry: RuleEntry): PathKind {
    const target = entry.linkTarget ?? '';
    const targetKind = target === '' ? undefined : this.kinds.get(target);
    if (target === entry.path || (targetKind !== 'file' && targetKind !== 'symlink')) {
      throw new PackageError(
        `hardlink ${entry.path} points to ${target || '(nothing)'}, which is not an earlier file or symlink of the archive`,
      );
    }
    return targetKind;
  }

  /** Refuses paths that go through a symlink (or a file) created earlier by the archive. */
  private checkParents(path: string): void {
    let slash = path.indexOf('/');
    while (slash !== -1) {
      const parent = path.slice(0, slash);
      const kind = this.kinds.get(parent);
      if (kind === 'symlink') {
        throw new PackageError(`entry ${path} would be written through the symlink ${parent} that the archive created earlier`);
      }
      if (kind === 'file') {
        throw new PackageError(`entry ${path} lies under ${parent}, which the archive created as a file`);
      }
      slash = path.indexOf('/', slash + 1);
    }
  }
}
