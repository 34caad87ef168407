// Which chunk files this process has verified since they were last written.
//
// A chunk is served to peers only after its bytes were hashed against its id. Hashing every chunk on every
// serve would cost a decode and a sha256 per upload, so a verification is remembered under the identity of
// the file it read: inode, size and ctime. Any write to the file, a rename over it, a chmod or utimes
// changes one of them (ctime cannot be set from user space), so the next serve verifies again. Chunks this
// process writes itself were verified just before (put hashes them, receive checks them) and are noted
// when written.
import type { Stats } from 'node:fs';

/** Remembered verifications; beyond this the oldest are forgotten (and verified again when next served). */
const MAX_REMEMBERED = 200_000;

export class VerifiedChunks {
  private readonly seen = new Map<string, string>();

  private static key(info: Stats): string {
    return `${info.dev}:${info.ino}:${info.size}:${info.ctimeMs}`;
  }

  /** True when `info` describes the same file, unchanged, as the last verification of `id`. */
  has(id: string, info: Stats): boolean {
    return this.seen.get(id) === VerifiedChunks.key(info);
  }

  note(id: string, info: Stats): void {
    this.seen.delete(id); // re-inserted last: the map's order is the forgetting order
    this.seen.set(id, VerifiedChunks.key(info));
    if (this.seen.size > MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value!);
  }

  forget(id: string): void {
    this.seen.delete(id);
  }
}
