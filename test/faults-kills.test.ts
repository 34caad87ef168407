// Issue 9 items 6 and 8 with real daemons: the agent SIGKILLs itself at each named step of an install or a
// forced replace (JOBLET_AGENT_TEST_KILL_AT, src/runtime/kill-point.ts); the next start must leave either
// the old complete tree or the new complete tree in place, with an install record that says which, and no
// leftovers. Also: a tree in place without a record is adopted when it matches its manifest and replaced
// when it does not; after an unclean stop a damaged file (what a power cut before writeback leaves) is
// found and the runtime reinstalled.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { exists, snapshot, startAgent, startFleet, tmpDir, waitFor, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';
import { Store } from '../src/store/store.js';

/** The tree without inode numbers (installed and source trees never share them). */
async function picture(root: string): Promise<string> {
  const out: string[] = [];
  for (const [p, e] of await snapshot(root)) out.push(JSON.stringify([p, e.type, e.mode, e.sha256 ?? null, e.target ?? null]));
  return out.sort().join('\n');
}

async function records(a: AgentHandle): Promise<{ name: string; version: string; manifestId: string; path: string }[]> {
  return a.json(['list']);
}

/** Nothing of an interrupted install may stay in the agent's work area. */
async function leftovers(runtimesDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of ['staging', 'trash', 'commits']) {
    const dir = path.join(runtimesDir, '.joblet-agent', sub);
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) out.push(`${sub}/${name}`);
  }
  return out;
}

interface Setup { root: string; a: AgentHandle; v1: string; v2: string; first: { manifestId: string } }

async function trees(root: string): Promise<{ v1: string; v2: string }> {
  const v1 = path.join(root, 'v1');
  const v2 = path.join(root, 'v2');
  await makeRuntimeTree(v1, { name: 'rt', version: '1.0.0', bulkBytes: 200_000, seed: 'one' });
  await makeRuntimeTree(v2, { name: 'rt', version: '1.0.0', bulkBytes: 300_000, seed: 'two' });
  await fs.writeFile(path.join(v2, 'only-in-v2.txt'), 'new\n');
  return { v1, v2 };
}

/** An agent with rt@1.0.0 installed from v1 (v2: a different tree of the same name and version). */
async function setup(t: ExecutionContext, env: Record<string, string> = {}): Promise<Setup> {
  const root = await tmpDir(t);
  const { v1, v2 } = await trees(root);
  const a = await startAgent(t, path.join(root, 'agent'), [], { env });
  const first = await a.json(['publish', v1]);
  return { root, a, v1, v2, first };
}

/**
 * Start the agent without its fleet key (alone, no swarm), so what the start-time recovery left can be looked
 * at before any download could change it.
 */
async function startAlone(t: ExecutionContext, a: AgentHandle): Promise<AgentHandle> {
  const text = await fs.readFile(a.config, 'utf8');
  await fs.writeFile(a.config, text.replace(/^fleetKey:.*$/m, 'fleetKey: null'));
  t.teardown(() => fs.writeFile(a.config, text));
  try {
    return await startAgent(t, a.dir);
  } finally {
    await fs.writeFile(a.config, text);
  }
}

const REPLACE_POINTS = ['replace-staged', 'replace-intent', 'replace-aside', 'replace-renamed', 'replace-old-removed', 'replace-recorded'];

for (const point of REPLACE_POINTS) {
  test.serial(`a kill at ${point} of a forced replace: the next start has the old or the new tree whole, and the record says which`, async (t) => {
    // Armed from the start: the first install of v1 passes no replace-* point; the forced publish of v2 dies at it.
    const s = await setup(t, { JOBLET_AGENT_TEST_KILL_AT: point });
    t.not((await s.a.run(['publish', s.v2, '--force'])).code, 0, `publish returns an error when the daemon dies at ${point}`);
    await waitFor(`the daemon kills itself at ${point}`, async () => s.a.proc.signalCode === 'SIGKILL');
    const target = path.join(s.a.runtimesDir, 'rt', '1.0.0');
    const [old, fresh] = [await picture(s.v1), await picture(s.v2)];

    const alone = await startAlone(t, s.a);
    t.regex(alone.logs(), /working_alone/);
    // What the start-time recovery left, with no swarm to change it: one whole tree, matching the record.
    const now = await picture(target);
    t.true(now === old || now === fresh, 'the tree in place is the old or the new one, never a mix');
    const [rec] = await records(alone);
    t.truthy(rec, 'an install record exists');
    if (now === old) t.is(rec!.manifestId, s.first.manifestId, 'the old tree has the old record');
    else t.not(rec!.manifestId, s.first.manifestId, 'the new tree has the new record');
    t.deepEqual(await leftovers(s.a.runtimesDir), [], 'no staging, trash or commit dirs are left');
    let agent = alone;
    if (point === 'replace-staged') {
      // Killed before the intent: the replace is undone; the forced publish was accepted (its manifest is
      // stored), so the swarm installs that newest manifest from the store.
      t.is(now, old);
      await alone.stop();
      agent = await startAgent(t, s.a.dir);
      await waitFor('the new tree is in place', async () => (await picture(target)) === fresh);
    } else {
      t.is(now, fresh, 'from the intent on, the replace is finished, not undone');
      t.regex(alone.logs(), /commit_recovered .*name=rt /);
    }
    // Publishing v2 again finds exactly that tree under the record (unchanged): the record matches the tree.
    const again = await agent.json(['publish', s.v2]);
    t.true(again.unchanged, 'the record describes the tree in place');
    t.is((await records(agent))[0]!.manifestId, again.manifestId);
    t.is(await picture(target), fresh);
  });
}

test('a kill during the recovery itself (old tree moved aside again) is recovered from by the next start', async (t) => {
  const s = await setup(t, { JOBLET_AGENT_TEST_KILL_AT: 'replace-intent' });
  t.not((await s.a.run(['publish', s.v2, '--force'])).code, 0);
  await waitFor('the daemon kills itself at replace-intent', async () => s.a.proc.signalCode === 'SIGKILL');
  const target = path.join(s.a.runtimesDir, 'rt', '1.0.0');
  // The restart that recovers dies halfway through its recovery, with no tree in place.
  const recovering = await startAgent(t, s.a.dir, [], { env: { JOBLET_AGENT_TEST_KILL_AT: 'recover-aside' } }).catch((err: Error) => err);
  t.true(recovering instanceof Error, 'the recovering start died');
  t.false(await exists(target));
  const alone = await startAlone(t, s.a);
  t.is(await picture(target), await picture(s.v2));
  t.true((await alone.json(['publish', s.v2])).unchanged);
  t.deepEqual(await leftovers(s.a.runtimesDir), []);
});

test('a kill between the renames of an update in place from the fleet: the restarted receiver finishes it', async (t) => {
  const root = await tmpDir(t);
  const { v1, v2 } = await trees(root);
  // Only the receiver is armed; its first install of v1 passes no replace-* point.
  const [pub, recv] = await startFleet(t, root, 2, { env: (i) => (i === 1 ? { JOBLET_AGENT_TEST_KILL_AT: 'replace-aside' } : undefined) });
  await pub!.json(['publish', v1]);
  const target = path.join(recv!.runtimesDir, 'rt', '1.0.0');
  await waitFor('the receiver installs v1', async () => (await records(recv!)).length === 1, 120_000);
  const updated = await pub!.json(['publish', v2, '--force']);
  await waitFor('the receiver kills itself with the old tree moved aside', async () => recv!.proc.signalCode === 'SIGKILL', 120_000);
  t.false(await exists(target), 'the kill left no tree in place');

  const again = await startAgent(t, recv!.dir);
  t.regex(again.logs(), /commit_recovered .*name=rt .*step=after-aside/);
  t.is(await picture(target), await picture(v2));
  t.is((await records(again))[0]?.manifestId, updated.manifestId);
  t.deepEqual(await leftovers(again.runtimesDir), []);
});

test('a kill between the rename of a first install and its record: the next start writes the record', async (t) => {
  const root = await tmpDir(t);
  const pkg = path.join(root, 'pkg');
  await makeRuntimeTree(pkg, { name: 'fresh', version: '2.0.0', bulkBytes: 100_000 });
  const dir = path.join(root, 'agent');
  const armed = await startAgent(t, dir, [], { env: { JOBLET_AGENT_TEST_KILL_AT: 'install-renamed' } });
  t.not((await armed.run(['publish', pkg])).code, 0);
  await waitFor('the daemon kills itself', async () => armed.proc.signalCode === 'SIGKILL');
  t.deepEqual(await Store.open(path.join(dir, 'data')).then(async (st) => {
    const r = await st.index.listInstalls();
    await st.close();
    return r;
  }), [], 'the kill left the tree without a record');

  const b = await startAgent(t, dir);
  t.regex(b.logs(), /commit_recovered .*name=fresh .*step=before-record/);
  const [rec] = await records(b);
  t.is(rec?.name, 'fresh');
  t.is(await picture(path.join(b.runtimesDir, 'fresh', '2.0.0')), await picture(pkg));
  t.true((await b.json(['publish', pkg])).unchanged);
  t.deepEqual(await leftovers(b.runtimesDir), []);
});

/** Stop the agent and delete its install record of rt@1.0.0, as a lost record (or an older agent's kill) leaves it. */
async function dropRecord(a: AgentHandle): Promise<void> {
  await a.stop();
  const st = await Store.open(a.dataDir);
  await st.index.deleteInstall('rt', '1.0.0');
  await st.close();
}

test('at start, a tree in place without a record is adopted when it matches its manifest in full', async (t) => {
  const s = await setup(t);
  await dropRecord(s.a);
  const b = await startAgent(t, s.a.dir);
  t.regex(b.logs(), /install_adopted .*name=rt /);
  t.is((await records(b))[0]?.manifestId, s.first.manifestId);
  t.is(await picture(path.join(b.runtimesDir, 'rt', '1.0.0')), await picture(s.v1));
});

test('at start, a tree in place without a record that differs from its manifest is replaced from the store', async (t) => {
  const s = await setup(t);
  await dropRecord(s.a);
  const target = path.join(s.a.runtimesDir, 'rt', '1.0.0');
  // Same size, other bytes: only the sha256 check can tell.
  const tool = path.join(target, 'isolated/usr/bin/tool');
  const text = await fs.readFile(tool, 'utf8');
  await fs.writeFile(tool, text.replace('tool', 'TOOL'));
  await fs.writeFile(path.join(target, 'stray'), 'x');
  const b = await startAgent(t, s.a.dir);
  t.regex(b.logs(), /install_orphan_differs .*name=rt .*reason=/);
  t.regex(b.logs(), /install_replaced .*name=rt /);
  t.is((await records(b))[0]?.manifestId, s.first.manifestId);
  t.is(await picture(target), await picture(s.v1));
  t.false(await exists(path.join(target, 'stray')));
});

test('after an unclean stop, an installed file emptied as by a power cut is found at start and the runtime reinstalled', async (t) => {
  const s = await setup(t);
  s.a.proc.kill('SIGKILL');
  await waitFor('the agent is dead', async () => s.a.proc.signalCode === 'SIGKILL');
  const target = path.join(s.a.runtimesDir, 'rt', '1.0.0');
  await fs.truncate(path.join(target, 'isolated/lib/libbulk.so'), 0);
  const b = await startAgent(t, s.a.dir);
  t.regex(b.logs(), /install_damaged .*name=rt .*reason=.*libbulk\.so differs \(content/);
  t.is(await picture(target), await picture(s.v1));
  t.is((await records(b))[0]?.manifestId, s.first.manifestId);

  // After a clean stop nothing is re-checked: the same damage is not looked for (the check costs a stat per entry).
  await b.stop();
  const c = await startAgent(t, s.a.dir);
  t.notRegex(c.logs(), /install_damaged/);
});
