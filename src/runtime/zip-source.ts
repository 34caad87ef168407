// A zip as a runtime package. The central directory is read first (it is at the end of the file), so
// the whole entry list is known before any data: the strip decision is exact, and entries are emitted
// in bytewise path order whatever order the zip tool wrote them in.
import { crc32 } from 'node:zlib';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import yauzl from 'yauzl';
import { decideStrip, stripPath } from './canonical-writer.js';
import type { SourceContext } from './dir-source.js';
import { normaliseEntryPath } from './entry-rules.js';
import { PackageError } from './types.js';

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const UNIX_SPECIAL: Record<number, string> = {
  0o010000: 'fifo',
  0o020000: 'character-device',
  0o060000: 'block-device',
  0o140000: 'socket',
};
const MADE_BY_UNIX = 3;
const EXTENDED_TIMESTAMP = 0x5455;
const UNICODE_PATH = 0x7075;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const MAX_SYMLINK_TARGET = 4096;

interface ZipItem {
  entry: yauzl.Entry;
  name: string;
  path: string;
  type: string;
  mode: number;
  mtime: Date;
  key: Buffer;
}

export async function produceFromZip(ctx: SourceContext): Promise<string | null> {
  const invalid = (detail: string) => new PackageError(`invalid zip file: ${ctx.input}: ${detail}`);
  const totalBytes = (await stat(ctx.readPath)).size;
  let zip: yauzl.ZipFile;
  try {
    // decodeStrings off: names are validated by our own rules, so a '../' entry gets our message.
    zip = await yauzl.openPromise(ctx.readPath, { lazyEntries: true, decodeStrings: false, autoClose: false });
  } catch (err) {
    throw invalid((err as Error).message);
  }
  const closeOnAbort = () => zip.close();
  ctx.signal.addEventListener('abort', closeOnAbort, { once: true });
  try {
    const items = await readCentralDirectory(zip, ctx, invalid);
    const prefix = decideStrip(items, ctx.strip);
    let read = 0;
    ctx.onProgress?.(0, totalBytes);
    for (const item of items) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const path = stripPath(item.path, prefix);
      if (path === null) continue;
      const base = { path, mode: item.mode, mtime: item.mtime, size: 0 };
      if (item.type === 'file') {
        const size = item.entry.uncompressedSize;
        await ctx.writer.add({ ...base, type: 'file', size, data: entryData(zip, item, invalid) });
      } else if (item.type === 'symlink') {
        await ctx.writer.add({ ...base, type: 'symlink', linkname: await symlinkTarget(zip, item, invalid) });
      } else {
        await ctx.writer.add({ ...base, type: item.type });
      }
      read += item.entry.compressedSize;
      ctx.onProgress?.(Math.min(read, totalBytes), totalBytes);
    }
    ctx.onProgress?.(totalBytes, totalBytes);
    return prefix === '' ? null : prefix;
  } finally {
    ctx.signal.removeEventListener('abort', closeOnAbort);
    if (zip.isOpen) zip.close();
  }
}

function readCentralDirectory(zip: yauzl.ZipFile, ctx: SourceContext, invalid: (d: string) => PackageError): Promise<ZipItem[]> {
  const maxEntries = ctx.writer.limits.maxEntries;
  return new Promise((resolve, reject) => {
    const items: ZipItem[] = [];
    const fail = (err: Error) => {
      zip.removeAllListeners('entry');
      reject(err instanceof PackageError ? err : invalid(err.message));
    };
    zip.on('error', fail);
    zip.on('end', () => {
      const sorted = items.filter((i) => i.path !== '');
      sorted.sort((a, b) => Buffer.compare(a.key, b.key));
      resolve(sorted);
    });
    zip.on('entry', (entry: yauzl.Entry) => {
      try {
        items.push(describe(entry));
        if (items.length > maxEntries) {
          throw new PackageError(`package has more than ${maxEntries} entries (the limit), reached at entry ${items.at(-1)!.name}`);
        }
        zip.readEntry();
      } catch (err) {
        fail(err as Error);
      }
    });
    zip.readEntry();
  });
}

function describe(entry: yauzl.Entry): ZipItem {
  const unix = entry.versionMadeBy >>> 8 === MADE_BY_UNIX;
  const name = fileNameOf(entry, unix);
  const path = normaliseEntryPath(name);
  const attrs = unix ? entry.externalFileAttributes >>> 16 : 0;
  const format = attrs & S_IFMT;
  let type: string;
  if (format === S_IFLNK) type = 'symlink';
  else if (name.endsWith('/') || format === S_IFDIR) type = 'directory';
  else if (format === 0 || format === S_IFREG) type = 'file';
  else type = UNIX_SPECIAL[format] ?? 'unknown';
  const permissions = attrs & 0o7777;
  const mode = permissions !== 0 ? permissions : type === 'directory' ? 0o755 : 0o644;
  return { entry, name, path, type, mode, mtime: mtimeOf(entry), key: Buffer.from(path) };
}

/**
 * The spec says CP437 unless the UTF-8 flag or a Unicode path field says otherwise, but Info-ZIP on
 * Unix stores names as the raw bytes it got from the file system, and unzip writes them back as they
 * are. So a name from a Unix zip that is valid UTF-8 is taken as UTF-8, like unzip does.
 */
function fileNameOf(entry: yauzl.Entry, unix: boolean): string {
  const flaggedUtf8 = (entry.generalPurposeBitFlag & 0x800) !== 0;
  const hasUnicodeField = entry.extraFields.some((f) => f.id === UNICODE_PATH);
  if (unix && !flaggedUtf8 && !hasUnicodeField) {
    try {
      return strictUtf8.decode(entry.fileNameRaw);
    } catch {
      // Not UTF-8: fall through to the spec's CP437.
    }
  }
  return yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, false);
}

/** Info-ZIP's extended timestamp (UTC seconds) when present; otherwise the DOS date, read as local time like unzip. */
function mtimeOf(entry: yauzl.Entry): Date {
  const field = entry.extraFields.find((f) => f.id === EXTENDED_TIMESTAMP);
  if (field && field.data.length >= 5 && (field.data[0]! & 1) !== 0) {
    return new Date(field.data.readInt32LE(1) * 1000);
  }
  return entry.getLastModDate({ forceDosFormat: true });
}

async function openEntry(zip: yauzl.ZipFile, item: ZipItem, invalid: (d: string) => PackageError): Promise<Readable> {
  try {
    return await zip.openReadStreamPromise(item.entry);
  } catch (err) {
    throw invalid(`entry ${item.name}: ${(err as Error).message}`);
  }
}

/** The entry's bytes, checked against the CRC-32 of the central directory (yauzl checks sizes only). */
async function* entryData(zip: yauzl.ZipFile, item: ZipItem, invalid: (d: string) => PackageError): AsyncGenerator<Buffer> {
  const stream = await openEntry(zip, item, invalid);
  let crc = 0;
  try {
    for await (const chunk of stream) {
      crc = crc32(chunk as Buffer, crc);
      yield chunk as Buffer;
    }
  } catch (err) {
    if (err instanceof PackageError) throw err;
    throw invalid(`entry ${item.name}: ${(err as Error).message}`);
  } finally {
    stream.destroy();
  }
  if (crc >>> 0 !== item.entry.crc32 >>> 0) throw invalid(`entry ${item.name} fails its CRC-32 check`);
}

/** `zip -y` stores a symlink as an entry whose content is the target. */
async function symlinkTarget(zip: yauzl.ZipFile, item: ZipItem, invalid: (d: string) => PackageError): Promise<string> {
  if (item.entry.uncompressedSize > MAX_SYMLINK_TARGET) throw invalid(`symlink ${item.name} has a target longer than ${MAX_SYMLINK_TARGET} bytes`);
  const parts: Buffer[] = [];
  for await (const chunk of entryData(zip, item, invalid)) parts.push(chunk);
  return Buffer.concat(parts).toString('utf8');
}
