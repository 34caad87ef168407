// Everything a scenario creates is recorded here the moment it exists, and removed by cleanupAll():
// processes (by the pid the simulator spawned, as a process group), then namespaces (their veths go
// with them), then temp dirs. It runs from a finally block and from SIGINT/SIGTERM handlers.
import fs from 'node:fs/promises';
import { stopGroup, pidAlive } from './sh.js';
import { destroyTopology, takenNames } from './topology.js';

export class Resources {
  readonly pids = new Set<number>();
  readonly namespaces: string[] = [];
  readonly dirs: string[] = [];
  private running: Promise<CleanupReport> | null = null;

  /** True once cleanupAll() has begun: nothing new may be started then (it would outlive the cleanup). */
  get cleaning(): boolean {
    return this.running !== null;
  }

  /** Idempotent: a signal arriving during a normal cleanup waits for the same work. */
  cleanupAll(): Promise<CleanupReport> {
    this.running ??= this.doCleanup();
    return this.running;
  }

  private async doCleanup(): Promise<CleanupReport> {
    const problems: string[] = [];
    await Promise.all([...this.pids].map(async (pid) => {
      if (!(await stopGroup(pid))) problems.push(`process ${pid} is still alive after SIGKILL`);
    }));
    for (const pid of this.pids) if (await pidAlive(pid)) problems.push(`process ${pid} is still alive`);
    problems.push(...(await destroyTopology(this.namespaces)));
    for (const d of this.dirs) await fs.rm(d, { recursive: true, force: true }).catch((e: Error) => problems.push(e.message));
    const left = await takenNames().catch((e: Error) => [`cannot list namespaces/links: ${e.message}`]);
    for (const n of left) problems.push(`${n} is still present after cleanup`);
    return { problems, pids: [...this.pids] };
  }
}

export interface CleanupReport { problems: string[]; pids: number[] }

/** Route SIGINT/SIGTERM through the cleanup, then exit with the conventional code. */
export function cleanupOnSignals(res: Resources): () => void {
  const handler = (sig: NodeJS.Signals) => {
    console.error(`\n${sig}: removing the simulated fleet`);
    res.cleanupAll().then((r) => {
      for (const p of r.problems) console.error(`cleanup: ${p}`);
    }).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => { process.off('SIGINT', handler); process.off('SIGTERM', handler); };
}
