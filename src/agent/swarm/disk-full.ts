// A full disk (ENOSPC) or an exhausted quota (EDQUOT) is a condition of this host, not a fault of the peer
// whose chunk was being written: fetching the chunk again from another peer cannot help. This module only
// recognises such errors; what to do about them (stop the transfer, wait for space) is in swarm.ts and
// disk-budget.ts.

export type DiskFullCode = 'ENOSPC' | 'EDQUOT';

/**
 * The code when `err` (or an error it wraps, as `cause` or in its message, as the tree writer's
 * "extraction into DIR failed: ENOSPC: ..." does) says the disk or the quota is full; null otherwise.
 */
export function diskFullCode(err: unknown): DiskFullCode | null {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return code;
    const message = (e as Error).message;
    if (typeof message === 'string') {
      const m = /\b(ENOSPC|EDQUOT)\b/.exec(message);
      if (m) return m[1] as DiskFullCode;
      // LevelDB reports the errno's text, not its name.
      if (/No space left on device/i.test(message)) return 'ENOSPC';
      if (/Disk quota exceeded/i.test(message)) return 'EDQUOT';
    }
  }
  return null;
}
