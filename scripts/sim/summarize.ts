// Turn the JSON files of several fleet-sim runs into the markdown rows of docs/benchmarks.md:
//   node dist/scripts/sim/summarize.js run1.json run2.json ...
import fs from 'node:fs/promises';
import type { ScenarioResult } from './scenario.js';

const f2 = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(2));

export function markdownRows(runs: { file: string; r: ScenarioResult }[]): string {
  const out = ['| run | N | B Mbit/s | racks / U / zones | S MB | S/B s | method | last s | median s | last/(S/B) | median/(S/B) | agent CPU s (sum) | peak RSS MB (max) | cross-rack bytes / S | machine busy during agent transfer | load avg at start |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const { file, r } of runs) {
    const p = r.params;
    const cpu = r.agents.reduce((s, a) => s + a.cpuDuringTransferS, 0).toFixed(1);
    const rss = Math.max(...r.agents.map((a) => a.peakRssMB)).toFixed(0);
    for (const [name, m] of Object.entries(r.methods)) {
      const agent = name === 'joblet-agent';
      out.push(`| ${file} | ${p.hosts} | ${p.hostMbit} | ${p.racks === 2 ? `2 / ${p.uplinkMbit} / ${p.zones ? 'on' : 'off'}` : '1'} | ${(p.packageBytes / 1e6).toFixed(1)} | ${f2(r.fluidBoundS)} | ` +
        `${name} | ${f2(m.lastS)} | ${f2(m.medianS)} | ${f2(m.lastRatio)} | ${f2(m.medianRatio)} | ${agent ? cpu : ''} | ${agent ? rss : ''} | ` +
        `${agent && r.crossRackPerPackage !== null ? r.crossRackPerPackage.toFixed(2) : ''} | ` +
        `${agent && r.machine.busyDuringTransfer !== undefined && r.machine.busyDuringTransfer !== null ? `${(r.machine.busyDuringTransfer * 100).toFixed(0)}%` : ''} | ${r.machine.loadAvgStart[0]} |`);
    }
  }
  return out.join('\n');
}

if (process.argv[1] && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  const runs = await Promise.all(process.argv.slice(2).map(async (file) => ({
    file: file.split('/').pop()!.replace(/\.json$/, ''), r: JSON.parse(await fs.readFile(file, 'utf8')) as ScenarioResult,
  })));
  console.log(markdownRows(runs));
}
