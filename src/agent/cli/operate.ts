// CLI commands for operating a fleet: the CI gate (`publish --wait`, `wait`) and `info`.
import type { ParseArgsConfig } from 'node:util';
import { callDaemon } from '../control.js';
import { formatBytes, table } from './format.js';
import { parseDuration } from '../units.js';

export const WAIT_OPTIONS = {
  hosts: { type: 'string' },
  percent: { type: 'string' },
  timeout: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export interface WaitArgs { hosts?: number; percent?: number; timeoutMs?: number }

/** --hosts / --percent / --timeout, checked; `usage` builds the caller's usage error (exit 2). */
export function waitArgs(v: { hosts?: string; percent?: string; timeout?: string }, usage: (msg: string) => Error): WaitArgs {
  const out: WaitArgs = {};
  if (v.hosts !== undefined && v.percent !== undefined) throw usage('give --hosts N or --percent P, not both');
  if (v.hosts !== undefined) {
    out.hosts = Number(v.hosts);
    if (!/^\d+$/.test(v.hosts) || !Number.isSafeInteger(out.hosts) || out.hosts < 1) throw usage(`--hosts must be a positive integer, got "${v.hosts}"`);
  }
  if (v.percent !== undefined) {
    out.percent = Number(v.percent.replace(/%$/, ''));
    if (!Number.isFinite(out.percent) || out.percent <= 0 || out.percent > 100) throw usage(`--percent must be more than 0 and at most 100, got "${v.percent}"`);
  }
  if (v.timeout !== undefined) {
    const ms = parseDuration(v.timeout);
    if (ms === null) throw usage(`--timeout must be a duration like 30s, 5m or 1h, got "${v.timeout}"`);
    out.timeoutMs = ms;
  }
  return out;
}

interface HostRow { peerId: string; self: boolean; state: string; reason: string | null }
interface WaitResult {
  ok: boolean; name: string; version: string; manifestId: string; installed: number; target: number; expected: number;
  waitedSeconds: number; timeoutSeconds: number; hosts: HostRow[];
}

/**
 * Ask the daemon to wait for the rollout of a manifest (by id or NAME@VERSION). Prints the outcome and
 * sets exit code 1 when the goal was not met in time: one line per host that does not have it, and why.
 */
export async function runWait(socket: string, target: Record<string, unknown>, args: WaitArgs, json: boolean): Promise<WaitResult> {
  const tty = process.stderr.isTTY && !json;
  const res = (await callDaemon(socket, { cmd: 'wait', args: { ...target, ...args } }, (p) => {
    if (tty) process.stderr.write(`\rwaiting: ${p.installed}/${p.target} hosts installed (${p.expected} should)\x1b[K`);
  })) as WaitResult;
  if (tty) process.stderr.write('\r\x1b[K');
  if (!res.ok) process.exitCode = 1;
  if (json) return res;
  const what = `${res.name}@${res.version}`;
  if (res.ok) {
    console.log(`${what} is installed on ${res.installed} of ${res.expected} hosts that should install it (needed ${res.target}) after ${res.waitedSeconds} s`);
  } else {
    console.log(`timed out after ${res.timeoutSeconds} s: ${what} is installed on ${res.installed} of ${res.expected} hosts that should install it, needed ${res.target}`);
  }
  // On a timeout, every host that does not have it, and why (on success `info` or --json tell the rest).
  if (!res.ok) {
    for (const h of res.hosts) if (h.state !== 'installed') console.log(`  ${h.peerId}${h.self ? ' (this host)' : ''}: ${h.reason}`);
  }
  return res;
}

export async function runInfo(socket: string, name: string, version: string | undefined, json: boolean): Promise<void> {
  const r = (await callDaemon(socket, { cmd: 'info', args: { name, version } })) as Record<string, any>;
  if (json) { console.log(JSON.stringify(r, null, 2)); return; }
  const rt = r.runtime as Record<string, unknown>;
  const lines = [
    `${r.name}@${r.version}`,
    `manifest      ${r.manifestId}`,
    `publisher     ${r.publisher}`,
    `created       ${r.createdAt}`,
    `size          ${formatBytes(r.sizeBytes)} unpacked tar, ${formatBytes(r.storedBytes)} in ${r.chunks} chunks`,
  ];
  for (const k of ['language', 'description']) if (typeof rt[k] === 'string') lines.push(`${k.padEnd(14)}${String(rt[k])}`);
  lines.push(`architectures ${Array.isArray(rt.architectures) && rt.architectures.length ? rt.architectures.join(', ') : 'any'}`);
  lines.push(`here          ${r.here.installed ? `installed at ${r.here.installed.path}` : r.here.skipped ?? 'not installed'}`);
  if (r.otherVersions.length) lines.push(`other versions ${r.otherVersions.join(', ')}`);
  lines.push('', `installed on ${r.hosts.installed.length} host(s)`);
  for (const p of r.hosts.installed) lines.push(`  ${p}`);
  if (r.hosts.notInstalled.length) {
    lines.push('', `not installed on ${r.hosts.notInstalled.length} host(s)`);
    lines.push(table(['HOST', 'STATE', 'WHY'], r.hosts.notInstalled.map((h: HostRow) => [h.peerId + (h.self ? ' (this host)' : ''), h.state, h.reason ?? ''])));
  }
  console.log(lines.join('\n'));
}

/** NAME or NAME@VERSION. */
export function splitSpec(spec: string, usage: (msg: string) => Error): { name: string; version: string | undefined } {
  const at = spec.indexOf('@');
  const name = at < 0 ? spec : spec.slice(0, at);
  const version = at < 0 ? undefined : spec.slice(at + 1);
  if (!name || version === '') throw usage(`"${spec}" is not NAME or NAME@VERSION`);
  return { name, version };
}
