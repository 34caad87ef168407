// A runtime tree as a list of entries (metadata only) plus one stream of file contents.
//
// Publishing cuts the two apart: file contents are chunked on their own, so two packages whose files hold
// the same bytes share their content chunks whatever their mtimes, modes or owners; the entry list is small
// and may change freely. Installing puts them back together: entries in order, each regular file taking
// its `size` bytes from the content stream.
//
// The entry list travels as newline-separated JSON arrays, one per entry, so it can be decoded one line
// at a time and a peer's list is checked line by line before anything is created:
//   ["d", path, mode, mtime]                      directory
//   ["f", path, mode, mtime, size, sha256-hex]    regular file; its bytes are next in the content stream
//   ["s", path, mtime, target]                    symlink, target verbatim
//   ["h", path, target-path]                      hardlink to an earlier entry
// Paths are canonical (normaliseEntryPath), modes are permission bits without setuid/setgid, mtimes are
// whole seconds.
import { normaliseEntryPath } from './entry-rules.js';
import { PackageError } from './types.js';

export type TreeEntry =
  | { type: 'directory'; path: string; mode: number; mtime: number }
  | { type: 'file'; path: string; mode: number; mtime: number; size: number; sha256: string }
  | { type: 'symlink'; path: string; mtime: number; target: string }
  | { type: 'link'; path: string; target: string };

/**
 * Where a tree goes, one entry at a time: `begin` an entry; for a file, `write` its bytes in pieces (exactly
 * `size` in all); then `end`. The file's sha256 in `begin` may be '' when the producer computes it while
 * reading (publish); a sink that needs it (the entry list) receives it at `end`.
 */
export interface TreeSink {
  begin(entry: TreeEntry): Promise<void> | void;
  write(piece: Buffer): Promise<void> | void;
  end(sha256?: string): Promise<void> | void;
}

/** Sends one tree to several sinks, in order, with each sink's backpressure respected. */
export class TeeSink implements TreeSink {
  constructor(private readonly sinks: TreeSink[]) {}
  async begin(entry: TreeEntry): Promise<void> {
    for (const s of this.sinks) await s.begin(entry);
  }
  async write(piece: Buffer): Promise<void> {
    for (const s of this.sinks) await s.write(piece);
  }
  async end(sha256?: string): Promise<void> {
    for (const s of this.sinks) await s.end(sha256);
  }
}

const MAX_MODE = 0o7777;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Longest line accepted: a 4 KiB path and a 4 KiB link target with JSON escapes fit easily. */
export const MAX_ENTRY_LINE = 64 * 1024;

export function encodeEntry(e: TreeEntry): string {
  switch (e.type) {
    case 'directory':
      return JSON.stringify(['d', e.path, e.mode, e.mtime]);
    case 'file':
      return JSON.stringify(['f', e.path, e.mode, e.mtime, e.size, e.sha256]);
    case 'symlink':
      return JSON.stringify(['s', e.path, e.mtime, e.target]);
    case 'link':
      return JSON.stringify(['h', e.path, e.target]);
  }
}

/**
 * Decodes the entry list in `bytes` one line at a time. Every line is checked for shape, and every path
 * must already be canonical: a list from a peer that spells a path any other way is refused, not repaired.
 */
export function* decodeEntries(bytes: Buffer): Generator<TreeEntry> {
  let start = 0;
  let line = 0;
  while (start < bytes.length) {
    let nl = bytes.indexOf(10, start);
    if (nl === -1) nl = bytes.length;
    line++;
    if (nl - start > MAX_ENTRY_LINE) throw new PackageError(`entry list line ${line} is longer than ${MAX_ENTRY_LINE} bytes`);
    yield decodeLine(bytes.toString('utf8', start, nl), line);
    start = nl + 1;
  }
}

function decodeLine(text: string, line: number): TreeEntry {
  const bad = (why: string) => new PackageError(`entry list line ${line} is invalid: ${why}`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  if (!Array.isArray(v) || v.length < 3) throw bad('not an entry array');
  const [kind, path] = v as [unknown, unknown];
  if (typeof path !== 'string' || path === '' || normaliseEntryPathSafe(path) !== path) {
    throw bad(`path ${JSON.stringify(path)} is not a canonical relative path`);
  }
  const int = (x: unknown, what: string, max: number): number => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0 || x > max) throw bad(`${what} of ${path} is not an integer in 0..${max}`);
    return x;
  };
  const str = (x: unknown, what: string): string => {
    if (typeof x !== 'string' || x === '' || x.includes('\0')) throw bad(`${what} of ${path} is not a non-empty string`);
    return x;
  };
  switch (kind) {
    case 'd':
      if (v.length !== 4) throw bad(`directory ${path} has ${v.length} fields, not 4`);
      return { type: 'directory', path, mode: int(v[2], 'mode', MAX_MODE) & ~0o6000, mtime: int(v[3], 'mtime', 2 ** 40) };
    case 'f': {
      if (v.length !== 6) throw bad(`file ${path} has ${v.length} fields, not 6`);
      const sha256 = v[5];
      if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) throw bad(`sha256 of ${path} is not 64 lowercase hex digits`);
      return {
        type: 'file', path, mode: int(v[2], 'mode', MAX_MODE) & ~0o6000, mtime: int(v[3], 'mtime', 2 ** 40),
        size: int(v[4], 'size', Number.MAX_SAFE_INTEGER), sha256,
      };
    }
    case 's':
      if (v.length !== 4) throw bad(`symlink ${path} has ${v.length} fields, not 4`);
      return { type: 'symlink', path, mtime: int(v[2], 'mtime', 2 ** 40), target: str(v[3], 'target') };
    case 'h': {
      if (v.length !== 3) throw bad(`hardlink ${path} has ${v.length} fields, not 3`);
      const target = str(v[2], 'target');
      if (normaliseEntryPathSafe(target) !== target) throw bad(`hardlink target ${JSON.stringify(target)} is not a canonical relative path`);
      return { type: 'link', path, target };
    }
    default:
      throw bad(`unknown entry kind ${JSON.stringify(kind)}`);
  }
}

function normaliseEntryPathSafe(p: string): string | null {
  try {
    return normaliseEntryPath(p);
  } catch {
    return null;
  }
}
