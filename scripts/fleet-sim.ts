// Fleet simulator: N hosts as network namespaces with tc-shaped links, one joblet-agent per host,
// a publish from host 0, timed against BitTorrent (opentracker + aria2c), a central HTTP server and a
// sequential copy loop over the same links. Needs root. Run `node dist/scripts/fleet-sim.js --help` for the flags.
import '../src/agent/polyfill.js';
import { parseArgs } from 'node:util';
import fs from 'node:fs/promises';
import { runScenario, type ScenarioOptions, type ScenarioResult } from './sim/scenario.js';
import { methodTable, installSvg, table } from './sim/report.js';
import { parseSize } from '../src/agent/units.js';
import { capRates } from './sim/cap-rates.js';
import { BASELINE_NAMES, type BaselineName } from './sim/baselines.js';
import { runSoak, type SoakOptions } from './sim/soak.js';
import { describeSoak } from './sim/soak-report.js';

const USAGE = `usage: node dist/scripts/fleet-sim.js [flags]
  --hosts N            number of hosts (default 8, at most 250)
  --mbit B             per-host rate in Mbit/s, both directions; 0 = unshaped (default 50)
  --racks 1|2          two racks: one bridge each, joined by one uplink (default 1)
  --uplink-mbit U      uplink rate in Mbit/s with two racks (default = B)
  --zones              start agents with --zone rackA / rackB
  --max-upload-rate R  start agents with this host-wide upload cap (e.g. 2MiB); the report gives each host's rate
  --max-download-rate R  the same for downloads
  --package PATH       a .tar.gz runtime package to publish (default: generate one)
  --size MB            size of the generated package in MB of 10^6 bytes (default 67.1, i.e. 64 MiB)
  --save-package PATH  keep a copy of the generated package, to reuse with --package
  --baselines LIST     baselines to time after the agents, comma-separated, in this order:
                       bittorrent, central, sequential (default: all three)
  --no-baselines       skip every baseline
  --timeout S          bound on each phase, in seconds (default: max(120, 20 x S/B, 2 x N x S/B))
  --keep-logs DIR      copy every agent's log (and the BitTorrent logs) to DIR before cleaning up
  --json PATH          write the figures as JSON
  --svg PATH           write a picture: hosts installed over time, one line per method

soak (docs/benchmarks.md): --soak runs a seeded timeline of publishes and removals from host 0, SIGKILLs and
restarts of agents and a partition, then checks that every host converges; --hosts, --racks, --mbit,
--keep-logs and --json apply, the package and baseline flags do not.
  --soak               run the soak instead of the timed publish (default here: 8 hosts, 2 racks, 16 Mbit/s)
  --seed S             the plan's seed, a whole number (default 1)
  --changes C          publishes and removals (default 20)
  --kills K            SIGKILLs of agents, each restarted a few seconds later (default 3)
  --no-partition       no partition and heal
  --converge-timeout S bound on the wait for convergence after the last event (default 300)
  --max-rss-mb M       fail when an agent's peak RSS goes above M MB (default 400)`;

export interface SimArgs extends Omit<ScenarioOptions, 'log' | 'timeoutS'> { timeoutS: number | null; jsonPath?: string; svgPath?: string; soak?: Omit<SoakOptions, 'log'> }

/** Parse and check the flags; throws an Error with one sentence on bad input. */
export function parseSimArgs(argv: string[]): SimArgs {
  const { values } = parseArgs({
    args: argv, strict: true,
    options: {
      hosts: { type: 'string' }, mbit: { type: 'string' }, racks: { type: 'string' }, 'uplink-mbit': { type: 'string' },
      zones: { type: 'boolean' }, package: { type: 'string' }, size: { type: 'string' }, 'save-package': { type: 'string' },
      'no-baselines': { type: 'boolean' }, baselines: { type: 'string' }, 'keep-logs': { type: 'string' }, timeout: { type: 'string' }, json: { type: 'string' }, svg: { type: 'string' },
      'max-upload-rate': { type: 'string' }, 'max-download-rate': { type: 'string' },
      soak: { type: 'boolean' }, seed: { type: 'string' }, changes: { type: 'string' }, kills: { type: 'string' },
      'no-partition': { type: 'boolean' }, 'converge-timeout': { type: 'string' }, 'max-rss-mb': { type: 'string' },
    },
  });
  const num = (name: string, v: string | undefined, dflt: number, min: number, max: number) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number from ${min} to ${max}, got "${v}"`);
    return n;
  };
  const soakOnly = (['seed', 'changes', 'kills', 'no-partition', 'converge-timeout', 'max-rss-mb'] as const).find((f) => values[f] !== undefined);
  if (soakOnly && !values.soak) throw new Error(`--${soakOnly} only applies with --soak`);
  const hosts = num('hosts', values.hosts, 8, 2, 250);
  if (!Number.isInteger(hosts)) throw new Error(`--hosts must be a whole number, got "${values.hosts}"`);
  const racks = num('racks', values.racks, values.soak ? 2 : 1, 1, 2);
  if (racks !== 1 && racks !== 2) throw new Error(`--racks must be 1 or 2, got "${values.racks}"`);
  if (racks === 2 && hosts < 2) throw new Error('--racks 2 needs at least 2 hosts');
  const hostMbit = num('mbit', values.mbit, values.soak ? 16 : 50, 0, 100_000);
  const rate = (flag: 'max-upload-rate' | 'max-download-rate') => {
    if (values[flag] === undefined) return undefined;
    if (parseSize(values[flag]) === null) throw new Error(`--${flag} must be bytes per second like 2MiB, got "${values[flag]}"`);
    return values[flag];
  };
  const agentArgs: string[] = [];
  for (const flag of ['max-upload-rate', 'max-download-rate'] as const) { const r = rate(flag); if (r) agentArgs.push(`--${flag}`, r); }
  return {
    agentArgs,
    hosts, hostMbit, racks,
    uplinkMbit: num('uplink-mbit', values['uplink-mbit'], hostMbit, 0, 100_000),
    zones: values.zones ?? false,
    packagePath: values.package,
    generateBytes: Math.round(num('size', values.size, 67.108864, 0.1, 4000) * 1e6),
    savePackage: values['save-package'],
    baselines: values['no-baselines'] ? [] : parseBaselines(values.baselines),
    timeoutS: values.timeout === undefined ? null : num('timeout', values.timeout, 0, 1, 86_400),
    keepLogs: values['keep-logs'],
    jsonPath: values.json, svgPath: values.svg,
    soak: values.soak ? soakArgs(values, num, hosts, racks as 1 | 2, hostMbit) : undefined,
  };
}

type NumFlag = (name: string, v: string | undefined, dflt: number, min: number, max: number) => number;

function soakArgs(values: Record<string, string | boolean | undefined>, num: NumFlag, hosts: number, racks: 1 | 2, hostMbit: number): Omit<SoakOptions, 'log'> {
  const whole = (name: string, dflt: number, min: number, max: number) => {
    const n = num(name, values[name] as string | undefined, dflt, min, max);
    if (!Number.isInteger(n)) throw new Error(`--${name} must be a whole number, got "${values[name]}"`);
    return n;
  };
  return {
    seed: whole('seed', 1, 0, 2 ** 32 - 1), hosts, racks, hostMbit, changes: whole('changes', 20, 1, 200), kills: whole('kills', 3, 0, 50),
    partition: values['no-partition'] !== true, runtimes: 3, convergeTimeoutS: num('converge-timeout', values['converge-timeout'] as string | undefined, 300, 10, 86_400),
    maxRssMB: num('max-rss-mb', values['max-rss-mb'] as string | undefined, 400, 10, 100_000),
    keepLogs: values['keep-logs'] as string | undefined,
  };
}

function parseBaselines(v: string | undefined): BaselineName[] {
  if (v === undefined) return [...BASELINE_NAMES];
  const names = v.split(',').map((x) => x.trim()).filter(Boolean);
  for (const n of names) {
    if (!(BASELINE_NAMES as readonly string[]).includes(n)) throw new Error(`--baselines: unknown baseline "${n}" (known: ${BASELINE_NAMES.join(', ')})`);
  }
  return [...new Set(names)] as BaselineName[];
}

/** Print the human table of one run. */
export function describe(r: ScenarioResult): string {
  const p = r.params;
  const lines = [
    `${r.date}  ${r.machine.cores} cores  load ${r.machine.loadAvgStart.join(' ')} -> ${r.machine.loadAvgEnd.join(' ')}`,
    `N = ${p.hosts}, B = ${p.hostMbit || 'unshaped'} Mbit/s, racks = ${p.racks}${p.racks === 2 ? `, uplink U = ${p.uplinkMbit} Mbit/s, zones ${p.zones ? 'on' : 'off'}` : ''}, ` +
      `S = ${(p.packageBytes / 1e6).toFixed(1)} MB (${p.packageName}), S/B = ${r.fluidBoundS?.toFixed(2) ?? 'n/a'} s, publish took ${r.publishS.toFixed(2)} s`,
    '',
    'time to install on the N-1 receiving hosts, from the moment the package is ready on host 0:',
    methodTable(r.methods, r.fluidBoundS),
    '',
    table([['host', 'rack', 'download 1%..99% s', 'MB in (link)', 'MB fetched (agent)', 'installed s', 'rate MB/s (agent)', 'peak RSS MB', 'CPU s total', 'CPU s transfer (user+sys)'],
      ...r.agents.map((a) => [a.host, a.rack, `${r.links.downloadStartS[a.host]}..${r.links.downloadEndS[a.host]}`,
        (r.links.downloadedBytes[a.host] / 1e6).toFixed(1), a.fetchedBytes === null || a.fetchedBytes === undefined ? '-' : (a.fetchedBytes / 1e6).toFixed(1), a.installedS?.toFixed(2) ?? 'never',
        a.transferRateBps === null || a.transferRateBps === undefined ? '-' : (a.transferRateBps / 1e6).toFixed(2), a.peakRssMB, a.cpuS,
        `${a.cpuDuringTransferS} (${a.userDuringTransferS}+${a.systemDuringTransferS})`])]),
    `all agents together used ${r.agents.reduce((s, a) => s + a.cpuDuringTransferS, 0).toFixed(1)} CPU s during the transfer, ` +
      `on ${r.machine.cores} cores over ${r.methods['joblet-agent']?.lastS.toFixed(1) ?? '?'} s; ` +
      `the whole machine (all processes, kernel) was ${r.machine.busyDuringTransfer === null ? '?' : (r.machine.busyDuringTransfer * 100).toFixed(0)}% busy meanwhile`,
    uploadSources(r.agents),
    r.links.publisherUploadShare === null ? '' : `host 0 upload used ${(r.links.publisherUploadShare * 100).toFixed(0)}% of B during the first S/B seconds; ` +
      `all uploads together used ${((r.links.totalUploadShare ?? 0) * 100).toFixed(0)}% of N x B until the last install`,
    '',
    `installed trees identical on every host: ${r.treesIdentical ? 'yes' : 'NO'}` +
      (r.baselineTreesIdentical === null ? '' : `; baseline trees identical: ${r.baselineTreesIdentical ? 'yes' : 'NO'}`),
  ];
  if (r.params.agentArgs?.length) lines.push(`agents started with ${r.params.agentArgs.join(' ')}`);
  for (const [flag, direction] of [['--max-upload-rate', 'up'], ['--max-download-rate', 'down']] as const) {
    const at = r.params.agentArgs?.indexOf(flag) ?? -1;
    const cap = at >= 0 ? parseSize(r.params.agentArgs![at + 1]!) : null;
    if (!cap) continue;
    const rates = capRates(r.linkSamples, direction, cap).filter((x) => x.meanActiveBps > 0);
    lines.push(`${direction === 'up' ? 'upload' : 'download'} against the cap (link bytes, so protocol overhead included): ` +
      rates.map((x) => `host ${x.host} ${(x.meanActiveBps / cap).toFixed(2)}x over its transfer, ${(x.maxWindowBps / cap).toFixed(2)}x at most over 5 s`).join('; '));
  }
  if (r.bitTorrent) lines.push(`BitTorrent: private torrent ${r.bitTorrent.infoHash} (${r.bitTorrent.torrentBytes} bytes), whitelisted on the tracker; DHT, LPD and PEX off`);
  if (r.zonesKnown) lines.push(`zone labels known for ${r.zonesKnown.known} of ${r.zonesKnown.peers} peer links when the publish began`);
  lines.push(`agent: commit ${r.agentVersion.commit}${r.agentVersion.modifiedSrc.length ? ` with modified ${r.agentVersion.modifiedSrc.join(', ')}` : ''}`);
  if (r.crossRackBytes !== null) lines.push(`bytes across the uplink: ${(r.crossRackBytes / 1e6).toFixed(1)} MB = ${r.crossRackPerPackage} x S`);
  lines.push(`cleanup: ${r.cleanup.problems.length ? r.cleanup.problems.join('; ') : 'all namespaces, links, processes and temp dirs removed'}`);
  return lines.filter((l, i) => l !== '' || lines[i - 1] !== '').join('\n');
}

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) { console.log(USAGE); return 0; }
  let args: SimArgs;
  try { args = parseSimArgs(process.argv.slice(2)); } catch (e) { console.error(`${(e as Error).message}\n${USAGE}`); return 2; }
  if (process.getuid?.() !== 0) { console.error('the fleet simulator needs root (network namespaces and tc)'); return 1; }
  if (args.soak) {
    const soak = await runSoak({ ...args.soak, log: (l) => console.log(`[soak] ${l}`) });
    console.log(`\n${describeSoak(soak)}`);
    if (args.jsonPath) await fs.writeFile(args.jsonPath, JSON.stringify(soak, null, 2) + '\n');
    return soak.failures.length === 0 ? 0 : 1;
  }
  const sizeForTimeout = args.packagePath ? (await fs.stat(args.packagePath)).size : args.generateBytes;
  const bound = args.hostMbit > 0 ? (sizeForTimeout * 8) / (args.hostMbit * 1e6) : 0;
  // The sequential loop alone needs about (N-1) x S/B, so the bound grows with N.
  const timeoutS = args.timeoutS ?? Math.max(120, 20 * bound, 2 * args.hosts * bound);
  const result = await runScenario({ ...args, timeoutS, log: (l) => console.log(`[fleet-sim] ${l}`) });
  console.log(`\n${describe(result)}`);
  if (args.jsonPath) await fs.writeFile(args.jsonPath, JSON.stringify(result, null, 2) + '\n');
  if (args.svgPath) {
    const series = Object.fromEntries(Object.entries(result.methods).map(([k, m]) => [k, m.finishedS]));
    const p = result.params;
    await fs.writeFile(args.svgPath, installSvg(`N = ${p.hosts}, B = ${p.hostMbit} Mbit/s, S = ${(p.packageBytes / 1e6).toFixed(0)} MB`, series, result.fluidBoundS, p.hosts - 1));
  }
  return result.treesIdentical && result.cleanup.problems.length === 0 ? 0 : 1;
}

// Run only as a program, so the tests can import parseSimArgs and describe.
if (process.argv[1] && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  main().then((code) => process.exit(code), (err: Error) => { console.error(`fleet-sim failed: ${err.message}`); process.exit(1); });
}

/** Where the agents' chunk uploads came from: the chunks each wrote last (memory) or the chunk files. */
function uploadSources(agents: ScenarioResult['agents']): string {
  const memory = agents.reduce((s, a) => s + (a.uploadsFromMemory ?? 0), 0);
  const disk = agents.reduce((s, a) => s + (a.uploadsFromDisk ?? 0), 0);
  if (memory + disk === 0) return 'chunk uploads: none counted';
  return `chunk uploads: ${memory + disk}, ${((100 * memory) / (memory + disk)).toFixed(0)}% answered from the chunks kept in memory, the rest read from chunk files`;
}
