// Small process helpers shared by the simulator: run a command to completion, and stop a process group
// that the simulator itself spawned, checking that it is really gone.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';

export interface RunResult { stdout: string; stderr: string }

/** Run a command; rejects with one sentence naming the command and its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${String(stderr || err.message).trim()}`));
      else resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function pidAlive(pid: number): Promise<boolean> {
  // A zombie still has a /proc entry; count it as gone since it runs nothing.
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  return state !== 'Z' && state !== 'X';
}

/**
 * Stop the process group led by `pid` (the simulator spawns each child detached, so the group holds only
 * what that child started): SIGTERM, wait up to graceMs, then SIGKILL. Returns whether it is gone.
 */
export async function stopGroup(pid: number, graceMs = 10_000): Promise<boolean> {
  const signal = (sig: NodeJS.Signals) => { try { process.kill(-pid, sig); } catch { /* already gone */ } };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await pidAlive(pid))) return true;
    await sleep(50);
  }
  signal('SIGKILL');
  for (let i = 0; i < 40; i++) {
    if (!(await pidAlive(pid))) return true;
    await sleep(50);
  }
  return false;
}
