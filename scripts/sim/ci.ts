// The CI scenario: 4 hosts, a ~5 MB generated package, no shaping. It fails (exit 1) unless every host
// installs an identical tree and nothing the simulator made is left: no jsim- namespace or link, no
// process it started. Needs root.
import '../../src/agent/polyfill.js';
import { runScenario, type ScenarioResult } from './scenario.js';
import { takenNames } from './topology.js';
import { pidAlive } from './sh.js';
import { describe } from '../fleet-sim.js';

export async function ciScenario(log: (line: string) => void = () => {}): Promise<{ result: ScenarioResult; failures: string[] }> {
  const result = await runScenario({
    hosts: 4, hostMbit: 0, racks: 1, uplinkMbit: 0, zones: false, generateBytes: 5e6,
    baselines: [], timeoutS: 120, log,
  });
  const failures: string[] = [];
  const missing = result.agents.filter((a) => a.installedS === null).map((a) => a.host);
  if (missing.length) failures.push(`hosts ${missing.join(', ')} never installed the package`);
  if (!result.treesIdentical) {
    failures.push(`installed trees differ: ${result.agents.map((a) => `host ${a.host} ${a.treeDigest?.slice(0, 12) ?? 'none'}`).join(', ')}`);
  }
  failures.push(...result.cleanup.problems);
  const left = await takenNames();
  if (left.length) failures.push(`left behind: ${left.join(', ')}`);
  for (const pid of result.cleanup.pids) if (await pidAlive(pid)) failures.push(`process ${pid} is still alive`);
  return { result, failures };
}

if (process.argv[1] && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  if (process.getuid?.() !== 0) { console.error('sim:ci needs root (network namespaces)'); process.exit(1); }
  ciScenario((l) => console.log(`[sim:ci] ${l}`)).then(({ result, failures }) => {
    console.log(`\n${describe(result)}`);
    if (failures.length) { for (const f of failures) console.error(`sim:ci FAILED: ${f}`); process.exit(1); }
    console.log('sim:ci passed: identical trees on 4 hosts, everything removed');
    process.exit(0);
  }, (err: Error) => { console.error(`sim:ci FAILED: ${err.message}`); process.exit(1); });
}
