// Hand-crafted hostile archives: what GNU tar would never make but an attacker or a broken tool could.
import fs from 'node:fs/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';

export type EvilEntry = Partial<tar.Header> & { name: string; body?: string };

const GOOD_YML = 'name: evil\nversion: "1.0"\n';

/** Write a tar (gzipped when the name ends in gz) holding the given entries, in order. */
export async function writeTar(file: string, entries: EvilEntry[], gzip = file.endsWith('gz')): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ ...header, mode: header.mode ?? 0o644, mtime: header.mtime ?? new Date(0) } as tar.Header, body ?? '', (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await ended;
  const raw = Buffer.concat(chunks);
  await fs.writeFile(file, gzip ? zlib.gzipSync(raw) : raw);
}

export function yml(text = GOOD_YML): EvilEntry {
  return { name: 'runtime.yml', body: text };
}
