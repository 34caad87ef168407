// Any runtime package (tar, tar.gz, zip, directory) -> its entries in canonical form, handed to a TreeSink
// (readPackage), or packed into one canonical uncompressed tar stream (openCanonicalTar).
//
// The canonical form exists so that identical trees give identical bytes on every host and so that two
// versions of a runtime share most of their content-defined chunks: paths are normalised, the single
// top-level directory is stripped, ownership is zeroed, setuid/setgid are dropped, and zip and
// directory inputs are emitted in sorted order. Every entry passes the safety rules on the way.
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { CanonicalWriter, StripGuessError, TarPackSink } from './canonical-writer.js';
import type { TreeSink } from './tree-entry.js';
import { produceFromDirectory, type SourceContext } from './dir-source.js';
import { hardlinkTarget, normaliseEntryPath } from './entry-rules.js';
import { openPackage, type ReadAccess } from './no-follow.js';
import { readTarEntries } from './tar-reader.js';
import { PackageError, type PackageLimits, type RuntimeMeta } from './types.js';
import { produceFromZip } from './zip-source.js';

export { StripGuessError } from './canonical-writer.js';

export type PackageKind = 'tar' | 'tar.gz' | 'zip' | 'dir';

export interface CanonicalInfo {
  meta: RuntimeMeta;
  runtimeYml: string;
  entries: number;
  unpackedBytes: number;
  kind: PackageKind;
  /** The top-level directory that was stripped, or null. */
  stripped: string | null;
}

export interface CanonicalOptions {
  limits?: PackageLimits;
  /** 'auto' strips a single top-level directory holding runtime.yml; 'none' never strips. */
  strip?: 'auto' | 'none';
  /** Bytes of the input read so far (for a directory: file bytes read) and the total. */
  onProgress?: (readBytes: number, totalBytes: number) => void;
  /** Whose right to read the package to check (the daemon reads on a client's behalf); none when absent. */
  access?: ReadAccess;
  /** Stops all reading; the read then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Reads `input` once and hands its entries, checked and canonical, to `sink`. Resolves with what was found
 * after the last entry has ended in the sink. On a bad package rejects with a PackageError; a StripGuessError
 * (tar inputs with strip 'auto' only) means: discard what the sink got and call again with strip 'none'.
 */
export async function readPackage(input: string, sink: TreeSink, opts: CanonicalOptions = {}): Promise<CanonicalInfo> {
  const writer = new CanonicalWriter(opts.limits, sink);
  const signal = opts.signal ?? new AbortController().signal;
  try {
    return await produce(input, writer, opts, signal);
  } catch (err) {
    throw signal.aborted ? (signal.reason as Error) : err;
  }
}

const READ_CHUNK = 1024 * 1024;
const GUNZIP_CHUNK = 256 * 1024;
const OUTPUT_BUFFER = 1024 * 1024;

/**
 * Opens `input` and produces its canonical tar on `stream`. `done` resolves with what was found once
 * the last byte has been handed to `stream`. On a bad package `stream` is destroyed with a
 * PackageError and `done` rejects with the same error; a StripGuessError (tar inputs with strip
 * 'auto' only) means: discard what was read and call again with strip 'none'. Either may be listened
 * to alone: neither an unobserved `done` nor a stream without an 'error' listener crashes the process.
 * Destroying `stream` early stops all reading and rejects `done`.
 */
export function openCanonicalTar(input: string, opts: CanonicalOptions = {}): { stream: Readable; done: Promise<CanonicalInfo> } {
  const tar = new TarPackSink();
  const writer = new CanonicalWriter(opts.limits, tar);
  const pack = tar.pack;
  const aborter = new AbortController();
  let settled = false;

  const stream = new Readable({
    highWaterMark: OUTPUT_BUFFER,
    read() {
      pack.resume();
    },
    destroy(err, callback) {
      if (!settled) {
        aborter.abort(err ?? new PackageError(`reading of package ${input} was stopped: the canonical tar stream was closed`));
        pack.destroy(null);
      }
      callback(err);
    },
  });
  // The same error always reaches `done`; this listener only keeps an unobserved stream from crashing.
  stream.on('error', () => {});
  pack.on('data', (chunk) => {
    if (!stream.push(chunk as Buffer)) pack.pause();
  });
  pack.on('end', () => stream.push(null));

  const done = produce(input, writer, opts, aborter.signal).then(
    (info) => {
      settled = true;
      tar.finalize();
      return info;
    },
    (err: unknown) => {
      settled = true;
      const reason = aborter.signal.aborted ? (aborter.signal.reason as Error) : (err as Error);
      aborter.abort(reason);
      pack.destroy(null);
      if (!stream.destroyed) stream.destroy(reason);
      throw reason;
    },
  );
  done.catch(() => {});
  return { stream, done };
}

async function produce(input: string, writer: CanonicalWriter, opts: CanonicalOptions, signal: AbortSignal): Promise<CanonicalInfo> {
  // Opened without following symlinks; every reader below reads this very file or directory.
  const opened = await openPackage(input, opts.access);
  try {
    const kind = opened.stat.isDirectory() ? 'dir' : await detectKind(input, opened.readPath);
    const ctx: SourceContext = {
      input, readPath: opened.readPath, opened, access: opts.access, writer, strip: opts.strip ?? 'auto', onProgress: opts.onProgress, signal,
    };
    let stripped: string | null;
    if (kind === 'dir') stripped = await produceFromDirectory(ctx);
    else if (kind === 'zip') stripped = await produceFromZip(ctx);
    else stripped = await produceFromTar(ctx, kind === 'tar.gz');
    if (kind !== 'dir') await opened.assertUnchanged();
    const summary = writer.finish();
    return { ...summary, kind, stripped };
  } finally {
    await opened.close();
  }
}

/** By magic bytes; when they match nothing known, the extension says what the file claims to be. */
async function detectKind(input: string, readPath = input): Promise<PackageKind> {
  let info;
  try {
    info = await stat(readPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new PackageError(`package ${input} does not exist`);
    throw new PackageError(`could not read package ${input}: ${(err as Error).message}`);
  }
  if (info.isDirectory()) return 'dir';
  if (!info.isFile()) throw new PackageError(`package ${input} is neither a regular file nor a directory`);
  const magic = Buffer.alloc(4);
  const handle = await open(readPath, 'r');
  try {
    await handle.read(magic, 0, 4, 0);
  } finally {
    await handle.close();
  }
  if (magic[0] === 0x1f && magic[1] === 0x8b) return 'tar.gz';
  if (magic[0] === 0x50 && magic[1] === 0x4b && ((magic[2] === 3 && magic[3] === 4) || (magic[2] === 5 && magic[3] === 6))) {
    return 'zip';
  }
  const lower = input.toLowerCase();
  if (lower.endsWith('.zip')) return 'zip';
  if (lower.endsWith('.tar.gz') || lower.endsWith('.tgz')) return 'tar.gz';
  return 'tar';
}

async function produceFromTar(ctx: SourceContext, gzipped: boolean): Promise<string | null> {
  const { input, writer, signal } = ctx;
  const total = (await stat(ctx.readPath)).size;
  const file = createReadStream(ctx.readPath, { highWaterMark: READ_CHUNK });
  let read = 0;
  ctx.onProgress?.(0, total);
  file.on('data', (chunk) => {
    read += chunk.length;
    ctx.onProgress?.(read, total);
  });
  let source: Readable = file;
  if (gzipped) {
    const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
    file.on('error', (err) => gunzip.destroy(err));
    file.pipe(gunzip);
    source = gunzip;
  }
  const stopOnAbort = () => {
    file.destroy();
    source.destroy();
  };
  signal.addEventListener('abort', stopOnAbort, { once: true });

  const entries = readTarEntries(source, {
    invalid: (detail) => new PackageError(`invalid tar archive ${input}: ${detail}`),
    sourceError: (err) => {
      if (signal.aborted) return signal.reason as Error;
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && code.startsWith('Z_')) return new PackageError(`invalid gzip data in ${input}: ${err.message}`);
      return new PackageError(`could not read package ${input}: ${err.message}`);
    },
  });

  // Speculative strip: undefined until the first real entry decides; '' means no strip.
  let prefix: string | undefined = ctx.strip === 'none' ? '' : undefined;
  try {
    for await (const entry of entries) {
      const header = entry.header;
      const rawType = header.type as string | null;
      const type = rawType === 'contiguous-file' ? 'file' : (rawType ?? 'unknown');
      let path = normaliseEntryPath(header.name);
      if (path === '') {
        if (type !== 'directory') throw new PackageError(`entry ${header.name} names the runtime root but is not a directory`);
        await drain(entry.data);
        continue;
      }
      // A first entry that is a directory (or lies inside one, for archives made without directory
      // entries) suggests the single-top-directory layout; a later entry outside it disproves it.
      if (prefix === undefined) prefix = type === 'directory' || path.includes('/') ? path.split('/', 1)[0]! : '';
      if (prefix !== '') {
        if (path === prefix) {
          await drain(entry.data);
          continue;
        }
        if (!path.startsWith(`${prefix}/`)) {
          throw new StripGuessError(`entry ${path} is not under ${prefix}/, the first directory of the archive`);
        }
        path = path.slice(prefix.length + 1);
      }
      let linkname: string | undefined;
      if (type === 'link') linkname = hardlinkTarget(path, header.linkname ?? '', prefix);
      else if (type === 'symlink') linkname = header.linkname ?? '';

      await writer.add({
        path,
        type,
        mode: header.mode ?? 0o644,
        mtime: header.mtime ?? new Date(0),
        size: header.size ?? 0,
        linkname,
        data: type === 'file' ? entry.data : undefined,
      });
      if (type !== 'file') await drain(entry.data);
    }
  } finally {
    signal.removeEventListener('abort', stopOnAbort);
    file.destroy();
  }
  ctx.onProgress?.(total, total);
  return prefix ? prefix : null;
}

async function drain(stream: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of stream) {
    // Data of entries that carry none in the canonical form (hardlinks with a body, directories).
  }
}
