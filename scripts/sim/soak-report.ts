// The soak's printout: parameters, the timeline as it happened, convergence, and one row per host.
import { table } from './report.js';
import type { SoakResult } from './soak.js';

export function describeSoak(r: SoakResult): string {
  const p = r.params;
  const lines = [
    `${r.date}  ${r.machine.cores} cores  load ${r.machine.loadAvgStart.join(' ')} -> ${r.machine.loadAvgEnd.join(' ')}`,
    `soak: seed ${p.seed}, N = ${p.hosts}, racks = ${p.racks}, B = ${p.hostMbit || 'unshaped'} Mbit/s, ${p.changes} publishes and removals of ` +
      `${p.runtimes} runtimes, ${p.kills} kill(s), partition ${p.partition ? 'yes' : 'no'}`,
    '',
    'timeline (seconds from the first event):',
    ...r.timeline.map((e) => `  +${e.atS.toFixed(1).padStart(6)} s  ${e.step === null ? '  ' : String(e.step).padStart(2)}  ${e.what}`),
    '',
    `expected on every host: ${Object.keys(r.expected).join(', ') || 'nothing'}`,
    `last event at +${r.lastEventS.toFixed(1)} s; ` +
      (r.convergedS === null ? 'NOT converged within the bound' : `every live host converged ${r.convergedS.toFixed(1)} s after it`),
    `mid-transfer kills: ${r.killsMidTransfer.caught} of ${r.killsMidTransfer.planned} hit a transfer in progress`,
    '',
    table([['host', 'rack', 'agents', 'converged s', 'installed', 'trees', 'leftovers', 'extra manifests', 'unreferenced chunks', 'peak RSS MB per agent', 'RSS MB at end'],
      ...r.hosts.map((h) => [h.host, h.rack, h.incarnations, h.convergedS?.toFixed(1) ?? 'never', h.installed.length,
        h.treeMismatches.length ? `${h.treeMismatches.length} differ` : 'identical', h.leftovers.length,
        h.extraManifests.length, `${h.unreferencedChunks} (${(h.unreferencedBytes / 1e6).toFixed(1)} MB)`,
        h.peakRssMB.join(' / '), h.finalRssMB ?? '-'])]),
  ];
  const errs = r.hosts.filter((h) => Object.keys(h.errorsLogged).length);
  lines.push('', errs.length ? `errors in the agents' logs: ${errs.map((h) => `host ${h.host}: ${Object.entries(h.errorsLogged).map(([k, n]) => `${n} ${k}`).join(', ')}`).join('; ')}` : 'errors in the agents\' logs: none');
  const extra = r.hosts.filter((h) => h.extraManifests.length);
  if (extra.length) lines.push('', 'manifests kept beyond the installed ones:', ...extra.map((h) => `  host ${h.host}: ${h.extraManifests.join(', ')}`));
  lines.push('', `agent: commit ${r.agentVersion.commit}${r.agentVersion.modifiedSrc.length ? ` with modified ${r.agentVersion.modifiedSrc.join(', ')}` : ''}`);
  lines.push(r.failures.length ? `FAILED:\n${r.failures.map((f) => `  - ${f}`).join('\n')}` : 'soak passed: every live host converged, trees identical, nothing left behind');
  lines.push(`cleanup: ${r.cleanup.problems.length ? r.cleanup.problems.join('; ') : 'all namespaces, links, processes and temp dirs removed'}`);
  return lines.join('\n');
}
