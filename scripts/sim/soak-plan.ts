// The soak test's plan: a seeded, fully deterministic timeline of publishes, removals, SIGKILLs, restarts,
// a partition and its heal, and the model of what every live host must hold once the timeline is over.
// Pure code (no root, no processes), so the tests can check that a seed always gives the same plan and
// that the model follows the agent's rules.

/** A small PRNG (mulberry32): the same seed gives the same sequence on every machine. */
export class Rng {
  private state: number;
  constructor(seed: number) { this.state = seed >>> 0; }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo + 1)); }
  pick<T>(xs: readonly T[]): T { return xs[Math.floor(this.next() * xs.length)]; }
  /** Seconds with one decimal in [lo, hi]. */
  seconds(lo: number, hi: number): number { return Math.round((lo + this.next() * (hi - lo)) * 10) / 10; }
}

export type SoakEvent =
  /** Publish from host 0. `revision` picks the content; `force` replaces an installed name@version (a newer manifest supersedes it). */
  | { kind: 'publish'; name: string; version: string; revision: number; force: boolean }
  /** A signed removal from host 0: one version, or every version of the runtime (version null). */
  | { kind: 'remove'; name: string; version: string | null }
  /** SIGKILL the agent of `host` by pid, restart it `downS` later. Mid-transfer: only once it is downloading. */
  | { kind: 'kill'; host: number; midTransfer: boolean; downS: number }
  /** Take links down: rack B's uplink, or the switch ports of single hosts. */
  | { kind: 'partition'; target: 'rackB' | number[] }
  | { kind: 'heal' };

export interface SoakStep { gapS: number; event: SoakEvent }

export interface SoakPlanSpec {
  seed: number;
  hosts: number;
  racks: 1 | 2;
  /** Publishes and removals together. */
  changes: number;
  kills: number;
  partition: boolean;
  /** Runtime names to cycle through. */
  runtimes: number;
}

const NAMES = ['alpha', 'beta', 'gamma', 'delta'];

/** Hosts of rack B, as topology.ts places them (the upper half). */
export function rackBHosts(hosts: number, racks: 1 | 2): number[] {
  if (racks !== 2) return [];
  return Array.from({ length: hosts }, (_, i) => i).filter((i) => i >= Math.ceil(hosts / 2));
}

/**
 * The timeline. Publishes and removals come in `changes` steps, one to five seconds apart; the partition
 * starts after about a third of them and heals after about two thirds, so that some publishes and removals
 * happen while part of the fleet cannot hear them. The first kill is mid-transfer (right after a publish,
 * of a host that downloads it); later kills alternate between mid-transfer and idle, and may hit host 0
 * (the publisher: the next publish waits for its restart) or a partitioned host.
 */
export function makePlan(spec: SoakPlanSpec): SoakStep[] {
  if (spec.hosts < 2) throw new Error('a soak needs at least 2 hosts');
  if (spec.changes < 1) throw new Error('a soak needs at least one publish');
  const rng = new Rng(spec.seed);
  const names = NAMES.slice(0, Math.max(1, Math.min(NAMES.length, spec.runtimes)));
  const model = new History();
  const changes: SoakEvent[] = [];
  const nextMinor = new Map<string, number>();
  const revision = new Map<string, number>();
  const newVersion = (name: string, reuseFirst: boolean): SoakEvent => {
    // After `remove NAME`, the next publish of NAME reuses its first version string with new content:
    // a later publish must supersede the tombstone of the same name@version.
    const minor = reuseFirst ? 0 : (nextMinor.get(name) ?? 0);
    if (!reuseFirst) nextMinor.set(name, minor + 1);
    const version = `1.${minor}.0`;
    const rev = (revision.get(`${name}@${version}`) ?? 0) + 1;
    revision.set(`${name}@${version}`, rev);
    return { kind: 'publish', name, version, revision: rev, force: false };
  };
  const wiped = new Set<string>();
  for (let i = 0; i < spec.changes; i++) {
    let ev: SoakEvent;
    const unpublished = names.filter((n) => !nextMinor.has(n));
    const live = names.filter((n) => model.versionsOf(n).length > 0);
    const roll = rng.next();
    if (unpublished.length > 0 && (i < names.length || roll < 0.5)) {
      ev = newVersion(unpublished[0], false);
    } else if (live.length === 0 || roll < 0.45 || i === spec.changes - 1) {
      // The last change is a publish: the fleet ends on a transfer, and what it must hold is never empty.
      const name = rng.pick(names);
      ev = newVersion(name, wiped.delete(name));
    } else if (roll < 0.6) {
      // A new build of an installed name@version, published with --force: its newer manifest supersedes.
      const name = rng.pick(live);
      const version = rng.pick(model.versionsOf(name));
      const rev = (revision.get(`${name}@${version}`) ?? 0) + 1;
      revision.set(`${name}@${version}`, rev);
      ev = { kind: 'publish', name, version, revision: rev, force: true };
    } else if (roll < 0.9) {
      const name = rng.pick(live);
      const versions = model.versionsOf(name);
      // Mostly an older version (an upgrade retiring its predecessor), sometimes the newest.
      const version = versions.length > 1 && rng.next() < 0.75 ? versions[0] : versions[versions.length - 1];
      ev = { kind: 'remove', name, version };
    } else {
      const name = rng.pick(live);
      wiped.add(name);
      ev = { kind: 'remove', name, version: null };
    }
    model.apply(ev, i);
    changes.push(ev);
  }

  const steps: SoakStep[] = changes.map((event) => ({ gapS: rng.seconds(1, 5), event }));
  steps[0].gapS = 0;
  const partitionAt = Math.max(1, Math.floor(spec.changes / 3));
  const healAt = Math.max(partitionAt + 1, Math.floor((2 * spec.changes) / 3));
  let partitioned: number[] = [];
  if (spec.partition) {
    const target: 'rackB' | number[] = spec.racks === 2
      ? 'rackB'
      : pickHosts(rng, spec.hosts, Math.max(1, Math.floor(spec.hosts / 4)));
    partitioned = target === 'rackB' ? rackBHosts(spec.hosts, spec.racks) : target;
    // Inserted from the back so the indices in front stay valid.
    steps.splice(Math.min(healAt, steps.length), 0, { gapS: rng.seconds(2, 6), event: { kind: 'heal' } });
    steps.splice(partitionAt, 0, { gapS: rng.seconds(1, 3), event: { kind: 'partition', target } });
  }

  // Kills go after publishes (mid-transfer) or anywhere (idle); never two at one position.
  const used = new Set<number>();
  for (let k = 0; k < spec.kills; k++) {
    const midTransfer = k % 2 === 0;
    const candidates = steps.map((s, i) => i).filter((i) => !used.has(i) && (!midTransfer || steps[i].event.kind === 'publish'));
    if (candidates.length === 0) break;
    const at = rng.pick(candidates);
    used.add(at);
    const inPartition = partitionWindow(steps, at);
    // A mid-transfer kill needs a host that can hear the publish: not host 0, not behind the partition.
    const eligible = Array.from({ length: spec.hosts }, (_, i) => i)
      .filter((h) => (midTransfer ? h !== 0 && !(inPartition && partitioned.includes(h)) : true));
    const host = rng.pick(eligible);
    steps.splice(at + 1, 0, { gapS: midTransfer ? 0 : rng.seconds(0.5, 3), event: { kind: 'kill', host, midTransfer, downS: rng.seconds(2, 8) } });
    // Shift the used positions behind the insertion.
    const shifted = [...used].map((u) => (u > at ? u + 1 : u));
    used.clear();
    for (const u of shifted) used.add(u);
    used.add(at + 1);
  }
  return steps;
}

function pickHosts(rng: Rng, hosts: number, n: number): number[] {
  const pool = Array.from({ length: hosts - 1 }, (_, i) => i + 1); // never host 0, the publisher
  const out: number[] = [];
  while (out.length < n && pool.length > 0) out.push(pool.splice(Math.floor(rng.next() * pool.length), 1)[0]);
  return out.sort((a, b) => a - b);
}

/** Is step `at` between a partition and its heal? */
function partitionWindow(steps: SoakStep[], at: number): boolean {
  let on = false;
  for (let i = 0; i <= at; i++) {
    const k = steps[i].event.kind;
    if (k === 'partition') on = true;
    else if (k === 'heal') on = false;
  }
  return on;
}

/**
 * The agent's rules for what a host holds, applied to the publish/remove history: every published
 * name@version stays installed (joblet itself picks "latest" among them) until a removal covers it; a
 * forced republish of a name@version replaces it (its manifest is newer); `remove NAME@VERSION` drops one
 * version, `remove NAME` every version; a later publish supersedes an earlier removal.
 * Values are the index of the publish step that produced the content a host must hold.
 */
export class History {
  private readonly live = new Map<string, { name: string; version: string; step: number }>();

  apply(ev: SoakEvent, step: number): void {
    if (ev.kind === 'publish') this.live.set(`${ev.name}@${ev.version}`, { name: ev.name, version: ev.version, step });
    else if (ev.kind === 'remove') {
      for (const [key, v] of this.live) if (v.name === ev.name && (ev.version === null || v.version === ev.version)) this.live.delete(key);
    }
  }

  /** Versions of `name` held now, oldest first (by semver minor, as the plan numbers them). */
  versionsOf(name: string): string[] {
    return [...this.live.values()].filter((v) => v.name === name).map((v) => v.version)
      .sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
  }

  /** name@version -> publish step index. */
  expected(): Map<string, number> {
    return new Map([...this.live].map(([k, v]) => [k, v.step]));
  }
}

/** The expected state after the whole plan, keyed by name@version, valued by the step index of its publish. */
export function expectedAfter(steps: SoakStep[]): Map<string, number> {
  const h = new History();
  steps.forEach((s, i) => h.apply(s.event, i));
  return h.expected();
}

/** One line per step, for the timeline print. */
export function describeEvent(ev: SoakEvent): string {
  switch (ev.kind) {
    case 'publish': return `publish ${ev.name}@${ev.version} (build ${ev.revision}${ev.force ? ', --force' : ''})`;
    case 'remove': return `remove ${ev.version === null ? `${ev.name} (every version)` : `${ev.name}@${ev.version}`}`;
    case 'kill': return `SIGKILL host ${ev.host}${ev.midTransfer ? ' mid-transfer' : ''}, restart ${ev.downS} s later`;
    case 'partition': return `partition ${ev.target === 'rackB' ? 'rack B (uplink down)' : `host(s) ${ev.target.join(', ')} (switch ports down)`}`;
    case 'heal': return 'heal the partition (links up)';
  }
}
