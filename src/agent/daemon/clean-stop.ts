// Knows whether the previous run of the daemon stopped cleanly: a marker file exists while it runs and is
// removed by a clean stop. Found at start, it means a kill, a crash or a power cut, after which the start
// checks the installed trees (recover-at-start.ts).
import fs from 'node:fs/promises';
import path from 'node:path';
import { syncPath } from '../../runtime/durable.js';

const MARKER = 'running';

/** Writes the marker (durably); returns whether one was already there. */
export async function markRunning(dataDir: string): Promise<boolean> {
  const file = path.join(dataDir, MARKER);
  const unclean = await fs.lstat(file).then(() => true, () => false);
  await fs.writeFile(file, `${process.pid}\n`, { mode: 0o600 });
  await syncPath(file);
  await syncPath(dataDir);
  return unclean;
}

export async function markStopped(dataDir: string): Promise<void> {
  await fs.rm(path.join(dataDir, MARKER), { force: true });
}
