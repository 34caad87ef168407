// The simulated network: one network namespace per host, a switch namespace holding one bridge per rack,
// and (with two racks) a single veth uplink between the two bridges. Every veth end is shaped on egress
// with htb, so each host gets B up and B down and the uplink gets U in each direction.
// All names start with PREFIX; addresses are in 198.18.0.0/15 (the benchmarking range), no default route.
import { run } from './sh.js';

export const PREFIX = 'jsim-';
export const SWITCH_NS = `${PREFIX}sw`;

export interface TopologySpec {
  hosts: number;
  /** Per-host rate in Mbit/s, both directions; 0 = unshaped. */
  hostMbit: number;
  racks: 1 | 2;
  /** Uplink rate in Mbit/s, both directions; 0 = unshaped. Only with two racks. */
  uplinkMbit: number;
}

export interface Host { index: number; ns: string; addr: string; rack: 'rackA' | 'rackB' }

export function hostNs(i: number): string { return `${PREFIX}h${i}`; }
/**
 * Rack A is 198.18.0.0/24, rack B 198.18.1.0/24, as racks behind their own switch usually get a subnet each;
 * every interface has a /16, so the hosts still reach each other directly over the bridges and the uplink.
 * The agents see nothing else of the racks (without --zones): the prefix is theirs to notice.
 */
export function hostAddr(i: number, rack: 'rackA' | 'rackB' = 'rackA'): string {
  if (i < 0 || i > 250) throw new Error(`host index ${i} is outside 0..250, the range the simulator addresses`);
  return `198.18.${rack === 'rackB' ? 1 : 0}.${i + 1}`;
}

/** Hosts 0..n/2-1 form rack A, the rest rack B (with one rack, everyone is in rack A). */
export function rackOf(i: number, spec: TopologySpec): 'rackA' | 'rackB' {
  return spec.racks === 2 && i >= Math.ceil(spec.hosts / 2) ? 'rackB' : 'rackA';
}

export function planHosts(spec: TopologySpec): Host[] {
  return Array.from({ length: spec.hosts }, (_, i) => ({ index: i, ns: hostNs(i), addr: hostAddr(i, rackOf(i, spec)), rack: rackOf(i, spec) }));
}

/** Names already taken by an earlier run (or someone else): namespaces or root links starting with PREFIX. */
export async function takenNames(): Promise<string[]> {
  const ns = (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(PREFIX));
  const links = (JSON.parse((await run('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[])
    .map((l) => l.ifname).filter((n) => n.startsWith(PREFIX));
  return [...ns, ...links];
}

async function shape(ns: string, dev: string, mbit: number): Promise<void> {
  if (mbit <= 0) return;
  await run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10']);
  // One class; quantum set explicitly since the default (rate/r2q) is above htb's sane range at these rates.
  await run('tc', ['-n', ns, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb',
    'rate', `${mbit}mbit`, 'ceil', `${mbit}mbit`, 'quantum', '60000']);
}

/**
 * Build the network. `created` receives each namespace name as soon as it exists, so the caller can tear
 * down a half-built network after a failure.
 */
export async function buildTopology(spec: TopologySpec, created: string[]): Promise<Host[]> {
  const hosts = planHosts(spec);
  await run('ip', ['netns', 'add', SWITCH_NS]);
  created.push(SWITCH_NS);
  const bridges = spec.racks === 2 ? ['brA', 'brB'] : ['brA'];
  for (const br of bridges) {
    await run('ip', ['-n', SWITCH_NS, 'link', 'add', br, 'type', 'bridge']);
    await run('ip', ['-n', SWITCH_NS, 'link', 'set', br, 'up']);
  }
  if (spec.racks === 2) {
    await run('ip', ['-n', SWITCH_NS, 'link', 'add', 'upA', 'type', 'veth', 'peer', 'name', 'upB']);
    await run('ip', ['-n', SWITCH_NS, 'link', 'set', 'upA', 'master', 'brA', 'up']);
    await run('ip', ['-n', SWITCH_NS, 'link', 'set', 'upB', 'master', 'brB', 'up']);
    await shape(SWITCH_NS, 'upA', spec.uplinkMbit);
    await shape(SWITCH_NS, 'upB', spec.uplinkMbit);
  }
  for (const h of hosts) {
    await run('ip', ['netns', 'add', h.ns]);
    created.push(h.ns);
    const port = `h${h.index}`;
    // Both ends are created directly inside their namespaces, so no simulator link ever appears in the root one.
    await run('ip', ['link', 'add', 'eth0', 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', SWITCH_NS]);
    await run('ip', ['-n', SWITCH_NS, 'link', 'set', port, 'master', h.rack === 'rackB' ? 'brB' : 'brA', 'up']);
    await run('ip', ['-n', h.ns, 'addr', 'add', `${h.addr}/16`, 'dev', 'eth0']);
    await run('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    await shape(h.ns, 'eth0', spec.hostMbit); // upload of the host
    await shape(SWITCH_NS, port, spec.hostMbit); // download of the host
  }
  return hosts;
}

/** Bytes sent on the uplink in both directions so far (0 with one rack). */
export async function uplinkBytes(): Promise<number> {
  const out = (await run('ip', ['-n', SWITCH_NS, '-s', '-j', 'link', 'show'])).stdout;
  let total = 0;
  for (const l of JSON.parse(out) as { ifname: string; stats64?: { tx: { bytes: number } } }[]) {
    if (l.ifname === 'upA' || l.ifname === 'upB') total += l.stats64?.tx.bytes ?? 0;
  }
  return total;
}

/** Delete the namespaces (their veths go with them). Processes inside must be stopped first. */
export async function destroyTopology(created: string[]): Promise<string[]> {
  const errors: string[] = [];
  for (const ns of [...created].reverse()) {
    await run('ip', ['netns', 'del', ns]).catch((e: Error) => errors.push(e.message));
  }
  created.length = 0;
  return errors;
}
