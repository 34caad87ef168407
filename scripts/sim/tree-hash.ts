// One digest for a whole installed tree: every file's content hash, every symlink's target, every
// directory, with permission bits, over sorted relative paths. Equal digests = identical trees.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';

async function fileHash(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export interface TreeDigest { digest: string; files: number; bytes: number }

export async function hashTree(root: string): Promise<TreeDigest> {
  const lines: string[] = [];
  let files = 0;
  let bytes = 0;
  async function walk(rel: string): Promise<void> {
    const abs = path.join(root, rel);
    const st = await fs.lstat(abs);
    const mode = (st.mode & 0o777).toString(8);
    if (st.isSymbolicLink()) lines.push(`l ${rel} ${await fs.readlink(abs)}`);
    else if (st.isFile()) { files++; bytes += st.size; lines.push(`f ${rel} ${mode} ${await fileHash(abs)}`); }
    else if (st.isDirectory()) {
      if (rel) lines.push(`d ${rel} ${mode}`);
      for (const name of (await fs.readdir(abs)).sort()) await walk(rel ? `${rel}/${name}` : name);
    } else lines.push(`? ${rel}`);
  }
  await walk('');
  return { digest: crypto.createHash('sha256').update(lines.join('\n')).digest('hex'), files, bytes };
}
