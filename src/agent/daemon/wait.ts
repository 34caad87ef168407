// The CI gate: wait until enough of the hosts that should install a manifest announce it installed, and
// otherwise say, host by host, why not. The fleet view comes from the swarm (state gossip and catalog
// listings, which carry each host's installed ids, its failures and its skips).
import { archAllowed, machineArch, normaliseArch } from '../../runtime/runtime-yml.js';
import type { SignedManifest } from '../../store/types.js';
import type { Store } from '../../store/store.js';
import type { FleetHostView } from '../swarm/swarm.js';
import { localSkipReason } from '../install/no-install.js';
import { noteText } from '../../protocol/host-notes.js';
import { compareVersions } from '../../store/index-db.js';
import { UserError } from '../errors.js';

export const DEFAULT_WAIT_TIMEOUT_MS = 10 * 60_000;
const POLL_MS = 500;

/** How many hosts must have it: an absolute number, a share of the hosts that should, or (neither) all of them. */
export interface WaitGoal { hosts?: number; percent?: number }

export type HostRolloutState = 'installed' | 'skipped' | 'failed' | 'pending';

export interface HostRollout {
  peerId: string;
  /** This agent itself. */
  self: boolean;
  arch: string;
  state: HostRolloutState;
  /** Why it is not installed there (null when installed). */
  reason: string | null;
  /** Seconds since this agent last heard from the host. */
  lastSeenSecondsAgo: number;
}

export interface Rollout {
  manifestId: string;
  name: string;
  version: string;
  /** Hosts that should install it: every host known, less the ones that skip it (architecture, --no-install). */
  expected: number;
  installed: number;
  /** Installed hosts needed for success. */
  target: number;
  done: boolean;
  hosts: HostRollout[];
}

/** Where the rollout of `sm` stands in `hosts`; pure, so it can be checked without a fleet. */
export function rolloutOf(sm: SignedManifest, hosts: FleetHostView[], goal: WaitGoal, now = Date.now()): Rollout {
  const meta = sm.manifest.runtime;
  const rows = hosts.map((h): HostRollout => {
    const lastSeenSecondsAgo = Math.max(0, Math.round((now - h.seenAt) / 1000));
    // A peer's arch string reaches the operator's terminal: one bounded line without control characters.
    const row = { peerId: h.peerId, self: h.self, arch: noteText(h.arch).slice(0, 32), lastSeenSecondsAgo };
    if (h.installed.includes(sm.id)) return { ...row, state: 'installed', reason: null };
    // The architecture a host announces decides even before the host has heard of the manifest.
    if (h.arch !== 'unknown' && !archAllowed(meta, h.arch)) {
      return { ...row, state: 'skipped', reason: `skipped by architecture: requires ${meta.architectures!.join(' or ')}, the host is ${normaliseArch(row.arch)}` };
    }
    const skip = h.skipped.get(sm.id);
    if (skip !== undefined) return { ...row, state: 'skipped', reason: `skipped: ${skip}` };
    const failure = h.failed.get(sm.id);
    if (failure !== undefined) return { ...row, state: 'failed', reason: `failed: ${failure}` };
    return {
      ...row, state: 'pending',
      reason: h.self ? 'not installed yet' : `not installed yet; not seen for ${lastSeenSecondsAgo} s`,
    };
  });
  const expected = rows.filter((r) => r.state !== 'skipped').length;
  const installed = rows.filter((r) => r.state === 'installed').length;
  // Multiply first: (60 / 100) * 5 is 3.0000000000000004 in floating point, and would round up to 4.
  const target = goal.hosts ?? Math.ceil(((goal.percent ?? 100) * expected) / 100);
  return {
    manifestId: sm.id, name: meta.name, version: meta.version,
    expected, installed, target, done: installed >= target, hosts: rows,
  };
}

/** Check the goal's numbers; the CLI checks them too, this guards the control API. */
export function checkGoal(goal: WaitGoal): void {
  if (goal.hosts !== undefined && goal.percent !== undefined) throw new UserError('give --hosts or --percent, not both');
  if (goal.hosts !== undefined && (!Number.isSafeInteger(goal.hosts) || goal.hosts < 1)) {
    throw new UserError(`--hosts must be a positive integer, got ${goal.hosts}`);
  }
  if (goal.percent !== undefined && (!Number.isFinite(goal.percent) || goal.percent <= 0 || goal.percent > 100)) {
    throw new UserError(`--percent must be more than 0 and at most 100, got ${goal.percent}`);
  }
}

export interface WaitResult extends Rollout {
  ok: boolean;
  waitedSeconds: number;
  timeoutSeconds: number;
}

/**
 * Poll the fleet view until the goal is met or the timeout passes. `progress` sees each change of the
 * installed count. Never throws on a timeout: the result says `ok: false` and why, per host.
 */
export async function waitForRollout(
  sm: SignedManifest,
  fleet: () => Promise<FleetHostView[]>,
  goal: WaitGoal,
  timeoutMs: number,
  progress: (r: { installed: number; target: number; expected: number }) => void,
  signal?: AbortSignal,
): Promise<WaitResult> {
  checkGoal(goal);
  const started = Date.now();
  let last = -1;
  for (;;) {
    const r = rolloutOf(sm, await fleet(), goal);
    if (r.installed !== last) {
      last = r.installed;
      progress({ installed: r.installed, target: r.target, expected: r.expected });
    }
    const waited = Date.now() - started;
    if (r.done || waited >= timeoutMs) {
      return { ...r, ok: r.done, waitedSeconds: Math.round(waited / 100) / 10, timeoutSeconds: timeoutMs / 1000 };
    }
    await new Promise((res) => setTimeout(res, Math.min(POLL_MS, timeoutMs - waited)));
    // A daemon that is stopping must not be held up by a CI job's wait (its socket closes only after this).
    if (signal?.aborted) throw new UserError('the agent is stopping; the wait was cut short');
  }
}

/** The control request of `wait`: a manifest id (after a publish) or NAME@VERSION, the goal and the timeout. */
export function waitRequest(all: SignedManifest[], args: Record<string, unknown>): { sm: SignedManifest; goal: WaitGoal; timeoutMs: number } {
  let sm: SignedManifest | undefined;
  if (typeof args.manifestId === 'string') {
    sm = all.find((x) => x.id === args.manifestId);
    if (!sm) throw new UserError(`manifest ${args.manifestId} is not known to this agent`);
  } else {
    if (typeof args.name !== 'string' || typeof args.version !== 'string') throw new UserError('wait needs NAME@VERSION');
    sm = pickManifest(all, args.name, args.version);
  }
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const timeoutMs = num(args.timeoutMs) ?? DEFAULT_WAIT_TIMEOUT_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) throw new UserError(`--timeout must be a positive duration, got ${String(args.timeoutMs)}`);
  const goal = { hosts: num(args.hosts), percent: num(args.percent) };
  checkGoal(goal);
  return { sm, goal, timeoutMs };
}

/** The fleet view of an agent that is not in a fleet (no fleet key): itself only. */
export async function aloneView(store: Store, peerId: string, zone: string | null): Promise<FleetHostView[]> {
  const skipped = new Map<string, string>();
  for (const sm of await store.index.listManifests()) {
    const reason = await localSkipReason(store.index, sm);
    if (reason !== null) skipped.set(sm.id, reason);
  }
  return [{
    peerId, self: true, arch: machineArch(), zone, seenAt: Date.now(),
    installed: (await store.index.listInstalls()).map((r) => r.manifestId), failed: new Map(), skipped,
  }];
}

/** The manifest for NAME@VERSION, or without a version the newest version known; the newest publish of it wins. */
export function pickManifest(all: SignedManifest[], name: string, version: string | undefined): SignedManifest {
  const same = all.filter((sm) => sm.manifest.runtime.name === name && (version === undefined || sm.manifest.runtime.version === version));
  if (same.length === 0) {
    throw new UserError(`${version === undefined ? name : `${name}@${version}`} is not known to this agent (not published here nor learned from the fleet)`);
  }
  same.sort((a, b) => compareVersions(b.manifest.runtime.version, a.manifest.runtime.version) ||
    Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt));
  return same[0];
}
