// The soak's plan and model (no root needed): a seed always gives the same timeline, the timeline holds
// what was asked for, the expected state follows the agent's publish/remove rules, and the packages are
// the same bytes for the same seed.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { makePlan, expectedAfter, History, Rng, type SoakPlanSpec } from '../scripts/sim/soak-plan.js';
import { makeSoakPackage } from '../scripts/sim/soak-packages.js';
import { parseSimArgs } from '../scripts/fleet-sim.js';
import { CI_SOAK } from '../scripts/sim/soak-ci.js';

const FULL: SoakPlanSpec = { seed: 1, hosts: 8, racks: 2, changes: 20, kills: 3, partition: true, runtimes: 3 };

test('the same seed gives the same plan, another seed another one', (t) => {
  t.deepEqual(makePlan(FULL), makePlan({ ...FULL }));
  t.notDeepEqual(makePlan(FULL), makePlan({ ...FULL, seed: 2 }));
  const r = new Rng(7);
  const xs = [r.next(), r.next(), r.next()];
  t.deepEqual(xs, (() => { const q = new Rng(7); return [q.next(), q.next(), q.next()]; })());
  t.true(xs.every((x) => x >= 0 && x < 1));
});

for (const seed of [1, 2, 3, 9, 42, 1234]) {
  test(`seed ${seed}: the plan holds the changes, kills and one partition asked for, in a sane order`, (t) => {
    for (const spec of [{ ...FULL, seed }, { ...CI_SOAK, seed }]) {
      const plan = makePlan(spec);
      const kinds = plan.map((s) => s.event.kind);
      t.is(kinds.filter((k) => k === 'publish' || k === 'remove').length, spec.changes);
      t.is(kinds.filter((k) => k === 'kill').length, spec.kills);
      t.is(kinds.filter((k) => k === 'partition').length, 1);
      t.true(kinds.indexOf('partition') < kinds.indexOf('heal'));
      t.is(plan[0].event.kind, 'publish');
      // At least one kill is mid-transfer; each of those comes right after a publish, of a host that can hear it.
      const mid = plan.flatMap((s, i) => (s.event.kind === 'kill' && s.event.midTransfer ? [{ i, host: s.event.host }] : []));
      t.true(mid.length >= 1);
      for (const m of mid) {
        t.is(plan[m.i - 1].event.kind, 'publish');
        t.not(m.host, 0);
      }
      const part = plan.find((s) => s.event.kind === 'partition')!.event as Extract<typeof plan[number]['event'], { kind: 'partition' }>;
      if (spec.racks === 2) t.is(part.target, 'rackB');
      else t.false((part.target as number[]).includes(0), 'the publisher is never cut off');
      // Every removal names something that is there; the fleet ends holding something.
      const h = new History();
      for (const [i, s] of plan.entries()) {
        if (s.event.kind === 'remove') {
          const { name, version } = s.event;
          t.true(version === null ? h.versionsOf(name).length > 0 : h.versionsOf(name).includes(version), `step ${i} removes what is there`);
        }
        if (s.event.kind === 'publish' && s.event.force) t.true(h.versionsOf(s.event.name).includes(s.event.version), `step ${i} forces over an installed version`);
        h.apply(s.event, i);
      }
      t.true(expectedAfter(plan).size > 0);
    }
  });
}

test('the model: versions coexist, --force supersedes, removals drop one or all versions, a later publish comes back', (t) => {
  const h = new History();
  h.apply({ kind: 'publish', name: 'a', version: '1.0.0', revision: 1, force: false }, 0);
  h.apply({ kind: 'publish', name: 'a', version: '1.1.0', revision: 1, force: false }, 1);
  h.apply({ kind: 'publish', name: 'b', version: '1.0.0', revision: 1, force: false }, 2);
  t.deepEqual([...h.expected()], [['a@1.0.0', 0], ['a@1.1.0', 1], ['b@1.0.0', 2]]);
  h.apply({ kind: 'publish', name: 'a', version: '1.1.0', revision: 2, force: true }, 3);
  h.apply({ kind: 'remove', name: 'a', version: '1.0.0' }, 4);
  t.deepEqual(Object.fromEntries(h.expected()), { 'a@1.1.0': 3, 'b@1.0.0': 2 });
  h.apply({ kind: 'remove', name: 'a', version: null }, 5);
  t.deepEqual(Object.fromEntries(h.expected()), { 'b@1.0.0': 2 });
  h.apply({ kind: 'publish', name: 'a', version: '1.0.0', revision: 2, force: false }, 6);
  t.deepEqual(Object.fromEntries(h.expected()), { 'a@1.0.0': 6, 'b@1.0.0': 2 });
});

test('packages: same seed, name, version and build give the same bytes and tree; versions share their big files', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'soak-pkg-'));
  try {
    const sizes = { sharedFileBytes: 64 * 1024, buildFileBytes: 32 * 1024 };
    const a = await makeSoakPackage(path.join(dir, 'x'), 5, 'alpha', '1.0.0', 1, sizes);
    const b = await makeSoakPackage(path.join(dir, 'y'), 5, 'alpha', '1.0.0', 1, sizes);
    t.deepEqual(await fs.readFile(a.path), await fs.readFile(b.path));
    t.is(a.digest, b.digest);
    const c = await makeSoakPackage(path.join(dir, 'x'), 5, 'alpha', '1.0.0', 2, sizes);
    t.not(c.digest, a.digest);
    const shared = (p: string) => fs.readFile(path.join(p, 'alpha-1.0.0', 'isolated/usr/lib/libshared0.so'));
    t.deepEqual(await shared(path.join(dir, 'x', 'src', 'alpha-1.0.0-b1')), await shared(path.join(dir, 'x', 'src', 'alpha-1.0.0-b2')));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('fleet-sim --soak flags', (t) => {
  const a = parseSimArgs(['--soak', '--seed', '7', '--changes', '12', '--kills', '2', '--no-partition']);
  t.like(a.soak, { seed: 7, changes: 12, kills: 2, partition: false, hosts: 8, racks: 2, hostMbit: 16 });
  t.is(parseSimArgs([]).soak, undefined);
  t.throws(() => parseSimArgs(['--seed', '7']), { message: '--seed only applies with --soak' });
  t.throws(() => parseSimArgs(['--soak', '--seed', '1.5']), { message: /--seed must be a whole number/ });
  t.throws(() => parseSimArgs(['--soak', '--kills=-1']), { message: /--kills must be a number from 0/ });
});
