// Operating a fleet with real agents on 127.0.0.1: a build host that only seeds (publish --no-install),
// the CI gate (publish --wait, wait) with its per-host reasons, and `info`.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startFleet, startAgent, waitFor, comparable, cli, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

async function peerIdOf(a: AgentHandle): Promise<string> {
  return (await a.json(['status'])).peerId;
}

async function visibleEntries(dir: string): Promise<string[]> {
  return (await fs.readdir(dir).catch(() => [] as string[])).filter((x) => !x.startsWith('.'));
}

test.serial('a build host publishes with --no-install and --wait: the fleet installs it, the build host never does, info tells', async (t) => {
  const root = await tmpDir(t);
  const [build, b, c] = await startFleet(t, root, 3);
  const [buildId, bId, cId] = await Promise.all([build, b, c].map(peerIdOf));
  // Every agent has heard of the others before the gate starts, so "all hosts" means all three.
  await waitFor('fleet view', async () => (await build.json(['status'])).swarm.fleetHostsSeen === 3);
  const src = path.join(root, 'ci-rt');
  await makeRuntimeTree(src, { name: 'ci-rt', version: '1.0.0', bulkBytes: 4 * 1024 * 1024 });

  const r = await build.run(['publish', src, '--no-install', '--wait', '--timeout', '3m', '--json']);
  t.is(r.code, 0, r.stderr + r.stdout);
  const out = JSON.parse(r.stdout);
  t.is(out.path, null);
  t.true(out.noInstall);
  t.true(out.wait.ok);
  t.is(out.wait.manifestId, out.manifestId);
  t.is(out.wait.expected, 2, 'the build host is not one that should install it');
  t.is(out.wait.target, 2);
  t.is(out.wait.installed, 2);
  const self = out.wait.hosts.find((h: any) => h.peerId === buildId);
  t.is(self.state, 'skipped');
  t.regex(self.reason, /--no-install/);

  // Installed, byte for byte, where it should be; not on the build host, which served every chunk.
  for (const x of [b, c]) t.deepEqual(await comparable(path.join(x.runtimesDir, 'ci-rt', '1.0.0')), await comparable(src));
  t.deepEqual(await build.json(['list']), []);
  t.deepEqual(await visibleEntries(build.runtimesDir), []);
  const st = await build.json(['status']);
  t.true(st.swarm.uploads.bytesServed >= 4 * 1024 * 1024);
  t.regex(st.swarm.fleet.find((f: any) => f.manifestId === out.manifestId).skippedHere ?? '', /--no-install/);

  // `info` on a fleet member: metadata, size, manifest, publisher, and where it is installed.
  const info = await waitFor('info shows both installs', async () => {
    const i = await b.json(['info', 'ci-rt']);
    return i.hosts.installed.length === 2 ? i : null;
  });
  t.is(info.manifestId, out.manifestId);
  t.is(info.version, '1.0.0');
  t.is(info.runtime.language, 'test');
  t.is(info.publisher, st.publisher);
  t.true(info.sizeBytes > 4 * 1024 * 1024);
  t.true(info.chunks >= 2);
  t.is(info.here.installed.path, path.join(b.runtimesDir, 'ci-rt', '1.0.0'));
  t.deepEqual([...info.hosts.installed].sort(), [bId, cId].sort());
  t.deepEqual(info.hosts.notInstalled.map((h: any) => [h.peerId, h.state]), [[buildId, 'skipped']]);
  t.regex(info.hosts.notInstalled[0].reason, /--no-install/);
  const human = await build.run(['info', 'ci-rt@1.0.0']);
  t.is(human.code, 0);
  t.regex(human.stdout, /installed on 2 host\(s\)/);
  t.regex(human.stdout, /published on this host with --no-install/);
  const unknown = await b.run(['info', 'no-such-rt']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no-such-rt is not known to this agent/);

  // The mark is persistent: a restarted build host still does not install it.
  await build.stop();
  const again = await startAgent(t, build.dir);
  await waitFor('the restarted build host considers the manifest', async () => /skipped name=ci-rt version=1\.0\.0 .*reason="published on this host with --no-install"/.test(again.logs()));
  t.deepEqual(await again.json(['list']), []);
  t.deepEqual(await visibleEntries(again.runtimesDir), []);
});

test.serial('the CI gate times out with one line per host and why: failed, skipped by architecture, not seen', async (t) => {
  const root = await tmpDir(t);
  // b refuses packages over 1 MB, so its install of a 3 MiB runtime fails with a clear error.
  const [a, b] = await startFleet(t, root, 2, { extra: (i) => (i === 1 ? ['--max-package-bytes', '1000000'] : []) });
  const bId = await peerIdOf(b);
  await waitFor('fleet view', async () => (await a.json(['status'])).swarm.fleetHostsSeen === 2);
  const src = path.join(root, 'gate');
  await makeRuntimeTree(src, { name: 'gate', version: '1.0.0', bulkBytes: 3 * 1024 * 1024 });

  const r = await a.run(['publish', src, '--wait', '--timeout', '30s']);
  t.is(r.code, 1, r.stdout + r.stderr);
  t.log(r.stdout);
  t.regex(r.stdout, /timed out after 30 s: gate@1\.0\.0 is installed on 1 of 2 hosts that should install it, needed 2/);
  const line = r.stdout.split('\n').find((l) => l.includes(bId));
  t.truthy(line, r.stdout);
  t.regex(line!, /failed: .*(limit|exceeds|1000000)/);
  t.is(r.stdout.split('\n').filter((l) => l.startsWith('  ')).length, 1, 'only the host without it is listed');

  // The same rollout, asked again later: one host is enough, all are not.
  const one = await a.run(['wait', 'gate@1.0.0', '--hosts', '1', '--json']);
  t.is(one.code, 0, one.stderr);
  t.like(JSON.parse(one.stdout), { ok: true, installed: 1, target: 1 });
  const half = await a.run(['wait', 'gate@1.0.0', '--percent', '50', '--timeout', '5s']);
  t.is(half.code, 0, half.stdout);
  const all = await a.run(['wait', 'gate@1.0.0', '--timeout', '2s', '--json']);
  t.is(all.code, 1);
  const doc = JSON.parse(all.stdout);
  t.is(doc.ok, false);
  t.is(doc.hosts.find((h: any) => h.peerId === bId).state, 'failed');

  // A runtime for another architecture: nobody should install it; asking for one host names the reason per host.
  const other = process.arch === 'arm64' ? 'amd64' : 'arm64';
  const foreign = path.join(root, 'foreign');
  await makeRuntimeTree(foreign, { name: 'foreign', version: '1.0.0', bulkBytes: 64 * 1024 });
  await fs.appendFile(path.join(foreign, 'runtime.yml'), `requirements:\n  architectures: [${other}]\n`);
  const fr = await a.run(['publish', foreign, '--wait', '--hosts', '1', '--timeout', '3s']);
  t.is(fr.code, 1);
  t.log(fr.stdout);
  const skippedLines = fr.stdout.split('\n').filter((l) => /skipped by architecture: requires/.test(l));
  t.is(skippedLines.length, 2, fr.stdout);
  const none = await a.run(['wait', 'foreign@1.0.0', '--json']);
  t.is(none.code, 0, 'no host should install it, so there is nothing to wait for');
  t.like(JSON.parse(none.stdout), { ok: true, expected: 0, installed: 0 });

  // A host that went away: "not seen for N s".
  await b.stop();
  const v2 = path.join(root, 'gate2');
  await makeRuntimeTree(v2, { name: 'gate', version: '2.0.0', seed: 'v2', bulkBytes: 64 * 1024 });
  const gone = await a.run(['publish', v2, '--wait', '--timeout', '3s']);
  t.is(gone.code, 1);
  t.regex(gone.stdout.split('\n').find((l) => l.includes(bId)) ?? '', /not installed yet; not seen for \d+ s/);
});

test.serial('wait and publish refuse bad options with usage errors', async (t) => {
  const root = await tmpDir(t);
  const a = await startAgent(t, path.join(root, 'a'));
  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'usage', version: '1.0.0', bulkBytes: 1024 });
  for (const [args, re] of [
    [['wait', 'usage'], /wait needs NAME@VERSION/],
    [['wait', 'usage@1.0.0', '--hosts', '1', '--percent', '50'], /not both/],
    [['wait', 'usage@1.0.0', '--hosts', '0'], /--hosts must be a positive integer/],
    [['wait', 'usage@1.0.0', '--percent', '150'], /--percent must be/],
    [['wait', 'usage@1.0.0', '--timeout', '5 parsecs'], /--timeout must be a duration/],
    [['publish', src, '--hosts', '2'], /go with --wait/],
  ] as const) {
    const r = await a.run([...args]);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
  }
  const unknown = await a.run(['wait', 'usage@9.9.9', '--timeout', '1s']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /usage@9\.9\.9 is not known to this agent/);
  // Alone (no fleet key), the gate counts this host only.
  const alone = await cli(['publish', src, '--wait', '--json', '--socket', a.socket]);
  t.is(alone.code, 0, alone.stderr);
  t.like(JSON.parse(alone.stdout).wait, { ok: true, expected: 1, installed: 1 });

  // A wait that cannot be met does not hold up the daemon's shutdown: it ends, and says why.
  const waits = () => a.logs().split('wait_started name=usage version=1.0.0').length - 1;
  const before = waits();
  const pending = cli(['wait', 'usage@1.0.0', '--hosts', '5', '--timeout', '10m', '--socket', a.socket]);
  await waitFor('the wait has started', async () => waits() > before);
  t.is(await a.stop(), 0, 'the agent stopped cleanly, not by SIGKILL');
  const cut = await pending;
  t.is(cut.code, 1);
  t.regex(cut.stderr, /the agent is stopping/);
});
