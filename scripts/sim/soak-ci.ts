// The short soak the test suite runs as root: 4 hosts, 6 publishes and removals, one mid-transfer kill and
// restart, one host partitioned and healed. Same checks as the full soak (`fleet-sim --soak`).
import '../../src/agent/polyfill.js';
import { runSoak, type SoakOptions, type SoakResult } from './soak.js';
import { describeSoak } from './soak-report.js';

export const CI_SOAK: Omit<SoakOptions, 'log'> = {
  seed: 9, hosts: 4, racks: 1, hostMbit: 16, changes: 6, kills: 1, partition: true, runtimes: 2,
  convergeTimeoutS: 180, maxRssMB: 400,
};

export function ciSoak(log: (line: string) => void = () => {}): Promise<SoakResult> {
  return runSoak({ ...CI_SOAK, log });
}

if (process.argv[1] && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  if (process.getuid?.() !== 0) { console.error('the soak needs root (network namespaces)'); process.exit(1); }
  ciSoak((l) => console.log(`[soak] ${l}`)).then((r) => {
    console.log(`\n${describeSoak(r)}`);
    process.exit(r.failures.length ? 1 : 0);
  }, (err: Error) => { console.error(`soak FAILED: ${err.message}`); process.exit(1); });
}
