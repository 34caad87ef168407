// The CI scenario itself: real namespaces, real agents. It needs root, as the CI has; elsewhere it is skipped.
import test from 'ava';
import { ciScenario } from '../scripts/sim/ci.js';
import { takenNames } from '../scripts/sim/topology.js';

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
