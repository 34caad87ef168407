// Shared fixtures for the store tests: temp dirs and deterministic pseudo-random bytes.

import { createCipheriv, createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

/** A fresh temp dir, removed when the test ends (also on failure). */
export async function tempDir(t: ExecutionContext, label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `joblet-store-${label}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `length` pseudo-random bytes fully determined by `seed` (AES-256-CTR keystream). */
export function seededBytes(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

/** Splits a buffer into pieces of the given size (the last may be shorter). */
export function* pieces(buf: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

export function sha256Hex(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Compressible text-like bytes (repeated lines with a counter). */
export function textBytes(length: number): Buffer {
  const lines: string[] = [];
  let total = 0;
  for (let i = 0; total < length; i++) {
    const line = `line ${i}: the quick brown fox jumps over the lazy dog ${i % 97}\n`;
    lines.push(line);
    total += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, length);
}
