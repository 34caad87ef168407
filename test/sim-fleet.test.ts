// The CI scenario itself: real namespaces, real agents. It needs root, as the CI has; elsewhere it is skipped.
import test from 'ava';
import { ciScenario } from '../scripts/sim/ci.js';
import { takenNames } from '../scripts/sim/topology.js';
import { ciSoak } from '../scripts/sim/soak-ci.js';

const asRoot = process.getuid?.() === 0 ? test.serial : test.skip;

asRoot('four namespaced hosts install identical trees and the simulator leaves nothing behind', async (t) => {
  t.timeout(240_000);
  const { result, failures } = await ciScenario();
  t.deepEqual(failures, []);
  t.is(result.agents.length, 4);
  t.true(result.agents.every((a) => a.installedS !== null && a.treeDigest === result.agents[0].treeDigest));
  t.true(result.agents.every((a) => a.peakRssMB > 0 && a.cpuS > 0));
  t.deepEqual(await takenNames(), []);
});

// The short soak: in this file so it runs after the scenario above, never beside it (both use jsim- names).
asRoot('soak: 4 hosts through publishes, removals, a mid-transfer kill and a partition converge, trees identical, nothing left', async (t) => {
  t.timeout(300_000);
  const r = await ciSoak();
  t.deepEqual(r.failures, []);
  t.not(r.convergedS, null);
  t.true(Object.keys(r.expected).length > 0);
  const live = r.hosts.filter((h) => h.finalRssMB !== null);
  t.is(live.length, 4);
  for (const h of live) {
    t.deepEqual(h.installed, Object.keys(r.expected).sort(), `host ${h.host} holds the expected set`);
    t.deepEqual(h.treeMismatches, []);
    t.deepEqual(h.leftovers, []);
    t.true(h.peakRssMB.every((mb) => mb > 0));
  }
  t.true(r.hosts.some((h) => h.incarnations === 2), 'one agent was killed and restarted');
  t.true(r.timeline.some((e) => e.what.startsWith('partition')) && r.timeline.some((e) => e.what.startsWith('heal')));
  t.deepEqual(await takenNames(), []);
});
