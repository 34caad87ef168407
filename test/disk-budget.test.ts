// The disk budget with real agents and real bytes: GC after a replaced version, a download that cannot fit
// refused once (not in a loop) and brought in when the budget is raised, and a real full filesystem (a small
// tmpfs, as root) that stops a transfer with nothing half-written and resumes it once space returns.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, initConfig, startFleet, startAgent, joinFleet, waitFor, cli, comparable, listAll, execFileP, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree, seededBytes } from './helpers/fixtures.js';

const MiB = 1024 * 1024;

async function installedManifest(a: AgentHandle, name: string): Promise<string | null> {
  const list = await a.json(['list']);
  return list.find((r: any) => r.name === name)?.manifestId ?? null;
}

async function scrape(a: AgentHandle): Promise<string> {
  const s = await a.json(['status']);
  return (await fetch(`${s.http}metrics`)).text();
}

/** The value of one series in Prometheus text, or null when it is absent. */
function series(text: string, name: string): number | null {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? null : Number(line.slice(name.length + 1));
}

const count = (text: string, what: string) => text.split(what).length - 1;

/**
 * A runtime whose bulk differs per seed and which shares a 3 MiB library with every other seed. The library
 * comes first in the content stream, so that about 2 MiB of chunks are shared (content-defined cut points
 * converge only slowly after a difference).
 */
async function versionTree(dir: string, name: string, seed: string, bulkBytes: number): Promise<void> {
  await makeRuntimeTree(dir, { name, version: '1.0.0', bulkBytes, seed });
  await fs.writeFile(path.join(dir, 'isolated/lib/a-shared.so'), seededBytes(3 * MiB, 'shared'));
}

test('store budget and watermarks come from the config and the flags; bad values are refused by name', async (t) => {
  const root = await tmpDir(t);
  const dir = path.join(root, 'a');
  const { config, original } = await initConfig(dir);
  await fs.writeFile(config, `${original}store:\n  maxBytes: 400MiB\n  highWatermark: 90%\n`);
  const a = await startAgent(t, dir, ['--store-low-watermark', '50']);
  const s = await a.json(['status']);
  t.is(s.store.maxBytes, 400 * MiB);
  t.is(s.store.highWatermarkPercent, 90);
  t.is(s.store.lowWatermarkPercent, 50);
  t.true(s.store.usageBytes > 0, 'the index counts');
  t.is(typeof s.store.filesystem.storePercent, 'number');
  t.deepEqual(s.store.gc, { runs: 0, files: 0, freedBytes: 0, evictedManifests: 0, lastRun: null });
  t.deepEqual(s.store.waitingForSpace, []);
  t.regex((await a.run(['status'])).stdout, /disk {7}.* used of a budget of 400 MiB; the store is .* % of its filesystem .*watermarks 90 % \/ 50 %/);
  await a.stop();

  await fs.writeFile(config, `${original}store:\n  maxBytes: lots\n`);
  const bad = await cli(['start', '--config', config]);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /"store\.maxBytes" must be a size like 400MiB/);
  t.true(bad.stderr.includes(config));
  await fs.writeFile(config, `${original}store:\n  highWater: 80\n`);
  t.regex((await cli(['start', '--config', config])).stderr, /unknown key "store\.highWater"/);
  await fs.writeFile(config, original);
  const flag = await cli(['start', '--config', config, '--store-max-bytes', 'huge']);
  t.is(flag.code, 2);
  t.regex(flag.stderr, /--store-max-bytes must be a size like 400MiB/);
  const pct = await cli(['start', '--config', config, '--store-high-watermark', '150%']);
  t.is(pct.code, 2);
  t.regex(pct.stderr, /--store-high-watermark must be a percentage of the filesystem from 1 to 100/);
  const order = await cli(['start', '--config', config, '--store-high-watermark', '70']);
  t.is(order.code, 1);
  t.regex(order.stderr, /store\.lowWatermark 75 % is above store\.highWatermark 70 %/);
});

test.serial('a budget smaller than two versions: GC evicts the replaced version\'s unshared chunks, never the installed one\'s', async (t) => {
  const root = await tmpDir(t);
  const BUDGET = 10 * MiB;
  // v1 and v2 are about 7 MiB each, 2 MiB of it shared: together about 12 MiB, over the budget; each alone fits.
  const [a, b] = await startFleet(t, root, 2, { extra: (i) => (i === 1 ? ['--store-max-bytes', '10MiB'] : []) });
  const v1 = path.join(root, 'v1');
  const v2 = path.join(root, 'v2');
  await versionTree(v1, 'twover', 'one', 4 * MiB);
  await versionTree(v2, 'twover', 'two', 4 * MiB);

  const first = await a.json(['publish', v1]);
  await waitFor('b installs v1', async () => (await installedManifest(b, 'twover')) === first.manifestId, 120_000, 300);
  const before = await b.json(['status']);
  t.is(before.store.maxBytes, BUDGET);

  const second = await a.json(['publish', v2, '--force']);
  await waitFor('b installs v2', async () => (await installedManifest(b, 'twover')) === second.manifestId, 120_000, 300);
  const s = await waitFor('b GCs v1', async () => {
    const st = await b.json(['status']);
    return st.store.gc.freedBytes > 0 ? st : null;
  }, 60_000, 300);
  t.log(`b: store ${before.store.usageBytes} B with v1, ${s.store.usageBytes} B after v2 and GC (budget ${BUDGET} B); GC freed ${s.store.gc.freedBytes} B in ${s.store.gc.files} files`);
  t.true(s.store.usageBytes <= BUDGET, `usage ${s.store.usageBytes} is over the budget`);
  t.true(s.store.gc.freedBytes >= 4 * MiB, 'the 5 MiB only v1 had went');
  t.true(s.store.gc.freedBytes <= before.store.bytes - 2 * MiB, 'the 2 MiB v1 shares with v2 stayed');
  t.regex(s.store.gc.lastRun.reason, /installed twover@1\.0\.0/);

  // Every chunk of the installed version is there and sound, and nothing else is.
  const v = await b.json(['verify']);
  t.deepEqual([v.missing, v.corrupt], [[], []]);
  t.is(s.store.chunks, v.checked, 'no chunk left over beyond the installed version\'s');
  t.deepEqual(await comparable(path.join(b.runtimesDir, 'twover', '1.0.0')), await comparable(path.join(a.runtimesDir, 'twover', '1.0.0')));

  // The publisher's forced publish left v1's chunks as garbage too; they went at once. The publish's own tidy
  // and the swarm's next maintenance round race for them: whichever wins, status counts it.
  const sa = await a.json(['status']);
  t.true(sa.store.gc.freedBytes >= 4 * MiB);
  t.regex(sa.store.gc.lastRun.reason, /published twover@1\.0\.0/);
  t.is(sa.store.chunks, (await a.json(['verify'])).checked);

  const m = await scrape(b);
  t.true((series(m, 'joblet_agent_gc_freed_bytes_total') ?? 0) >= 4 * MiB);
  t.is(series(m, 'joblet_agent_store_budget_bytes'), BUDGET);
  t.is(series(m, 'joblet_agent_downloads_waiting_for_space'), 0);
});

test.serial('a package larger than the budget is refused once with one sentence, and comes in when the budget is raised', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2, { extra: (i) => (i === 1 ? ['--store-max-bytes', '3MiB'] : []) });
  const src = path.join(root, 'toobig');
  await makeRuntimeTree(src, { name: 'toobig', version: '1.0.0', bulkBytes: 8 * MiB });
  const pub = await a.json(['publish', src]);

  await waitFor('b refuses toobig', async () => b.logs().includes('download_refused name=toobig'), 60_000, 300);
  // Maintenance rounds (every 5 s while the fleet is busy) and anti-entropy look at the manifest again and again:
  // none of them may try again while nothing changed.
  await new Promise((r) => setTimeout(r, 11_000));
  t.is(count(b.logs(), 'download_refused name=toobig'), 1, 'refused once, not in a loop');
  t.is(count(b.logs(), 'download_started name=toobig'), 0);
  t.is(count(b.logs(), 'install_failed name=toobig'), 0);

  const s = await b.json(['status']);
  t.is(s.store.waitingForSpace.length, 1);
  const w = s.store.waitingForSpace[0];
  t.is(w.manifestId, pub.manifestId);
  t.is(w.kind, 'budget');
  t.regex(w.reason, /^toobig@1\.0\.0 needs 8\.\d MiB more in the store, but the store budget is 3 MiB \(store\.maxBytes or --store-max-bytes\) .*; it is retried when the store shrinks or the budget is raised$/);
  t.false(w.reason.includes('\n'));
  const entry = s.swarm.fleet.find((f: any) => f.manifestId === pub.manifestId);
  t.is(entry.waitingForSpaceHere.kind, 'budget');
  t.false(entry.installedHere);
  const human = (await b.run(['status'])).stdout;
  t.true(human.includes(`waiting    toobig@1.0.0: ${w.reason}`));
  t.regex(human, /toobig +1\.0\.0 +\d+ +waiting for space \(budget\)/);
  const m = await scrape(b);
  t.true(m.includes('joblet_agent_downloads_refused_total{reason="budget"} 1'));
  t.is(series(m, 'joblet_agent_downloads_waiting_for_space'), 1);
  t.true(s.store.usageBytes <= 3 * MiB, 'nothing of it was stored');

  // Raising the budget (a restart with the new value) brings it in.
  await b.stop();
  const b2 = await startAgent(t, b.dir, ['--store-max-bytes', '64MiB']);
  await waitFor('b installs toobig with the larger budget', async () => (await installedManifest(b2, 'toobig')) === pub.manifestId, 120_000, 300);
  t.deepEqual(await comparable(path.join(b2.runtimesDir, 'toobig', '1.0.0')), await comparable(path.join(a.runtimesDir, 'toobig', '1.0.0')));
  t.deepEqual((await b2.json(['status'])).store.waitingForSpace, []);
});

const asRoot = process.getuid?.() === 0 ? test.serial : test.serial.skip;

asRoot('a full disk stops the transfer with nothing half-written, and it resumes by itself when space returns', async (t) => {
  const root = await tmpDir(t);
  const [a] = await startFleet(t, root, 1);
  const addr = (await a.json(['status'])).addresses[0] as string;
  // b's chunk store is a 24 MiB tmpfs; the 12 MiB runtime fits, until something else fills the tmpfs.
  const bDir = path.join(root, 'a1');
  const chunks = path.join(bDir, 'data', 'chunks');
  await fs.mkdir(chunks, { recursive: true });
  await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', chunks]);
  // Registered after tmpDir's removal and before the agent's stop: teardowns run in reverse, so the agent stops,
  // then this unmounts, then the temp dir goes (also when the test fails).
  t.teardown(() => execFileP('umount', [chunks]).catch(() => execFileP('umount', ['-l', chunks])).then(() => {}, () => {}));
  // A download cap, so that the transfer is still under way when the filler arrives.
  const b = await joinFleet(t, a, bDir, addr, ['--max-download-rate', '2MiB']);

  const src = path.join(root, 'fullrt');
  await makeRuntimeTree(src, { name: 'fullrt', version: '1.0.0', bulkBytes: 12 * MiB });
  const pub = await a.json(['publish', src]);
  await waitFor('b has part of fullrt', async () => {
    const tr = (await b.json(['status'])).swarm.transfers.find((x: any) => x.name === 'fullrt');
    return tr && tr.chunksHave >= 2;
  }, 120_000, 100);

  // Fill the tmpfs: large pieces, then small ones, until it takes no more.
  const filler = path.join(chunks, 'filler');
  const fh = await fs.open(filler, 'w');
  for (const piece of [MiB, 64 * 1024, 4096]) {
    const buf = Buffer.alloc(piece, 1);
    for (;;) {
      try {
        const { bytesWritten } = await fh.write(buf);
        if (bytesWritten < piece) break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        break;
      }
    }
  }
  await fh.close();

  const s = await waitFor('b reports the full disk', async () => {
    const st = await b.json(['status']);
    return st.store.waitingForSpace.find((w: any) => w.kind === 'disk-full') && !st.swarm.transfers.length ? st : null;
  }, 120_000, 300);
  const w = s.store.waitingForSpace[0];
  t.is(w.manifestId, pub.manifestId);
  t.regex(w.reason, /^fullrt@1\.0\.0 stopped: the disk is full \(ENOSPC: .*\); \d+ of \d+ chunks are kept, nothing half-written is left, and it resumes by itself when space returns$/);
  t.regex(b.logs(), /disk_full name=fullrt version=1\.0\.0 .*code=ENOSPC/);
  // Nothing half-written: no temp chunk file, no staging dir.
  t.deepEqual((await listAll(chunks)).filter((p) => p.includes('.tmp-')), []);
  t.deepEqual(await listAll(path.join(b.runtimesDir, '.joblet-agent', 'staging')), []);
  t.false(await fs.access(path.join(b.runtimesDir, 'fullrt')).then(() => true, () => false));

  // A local condition, not a peer's fault: no peer error, no failed install, no retry while the disk stays full.
  await new Promise((r) => setTimeout(r, 8_000));
  t.is(count(b.logs(), 'disk_full name=fullrt'), 1, 'stopped once, not fetched again and again');
  t.is(count(b.logs(), 'fetch_failed name=fullrt'), 0);
  t.is(count(b.logs(), 'install_failed name=fullrt'), 0);
  t.is(count(b.logs(), 'corrupt_chunk'), 0);
  const m = await scrape(b);
  t.is(series(m, 'joblet_agent_disk_full_total'), 1);
  t.is(series(m, 'joblet_agent_downloads_waiting_for_space'), 1);
  const entry = (await b.json(['status'])).swarm.fleet.find((f: any) => f.manifestId === pub.manifestId);
  t.is(entry.waitingForSpaceHere.kind, 'disk-full');

  // Space returns: the download resumes from the chunks it kept and installs the same tree.
  await fs.rm(filler);
  await waitFor('b installs fullrt after space returned', async () => (await installedManifest(b, 'fullrt')) === pub.manifestId, 180_000, 300);
  t.regex(b.logs(), /space_returned name=fullrt/);
  t.regex(b.logs(), /download_started name=fullrt .*resumedChunks=[1-9]/);
  t.deepEqual(await comparable(path.join(b.runtimesDir, 'fullrt', '1.0.0')), await comparable(path.join(a.runtimesDir, 'fullrt', '1.0.0')));
  t.deepEqual((await b.json(['status'])).store.waitingForSpace, []);
  const v = await b.json(['verify']);
  t.deepEqual([v.missing, v.corrupt], [[], []]);
});

asRoot('a full runtimes dir stops the install with its staging dir removed, and it installs once space returns', async (t) => {
  const root = await tmpDir(t);
  const [a] = await startFleet(t, root, 1);
  const addr = (await a.json(['status'])).addresses[0] as string;
  // b's runtimes dir is a 24 MiB tmpfs: the tree is extracted there while the chunks arrive.
  const bDir = path.join(root, 'a1');
  const runtimes = path.join(bDir, 'runtimes');
  await fs.mkdir(runtimes, { recursive: true });
  await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0755', 'tmpfs', runtimes]);
  t.teardown(() => execFileP('umount', [runtimes]).catch(() => execFileP('umount', ['-l', runtimes])).then(() => {}, () => {}));
  const b = await joinFleet(t, a, bDir, addr, ['--max-download-rate', '2MiB']);

  const src = path.join(root, 'fulltree');
  await makeRuntimeTree(src, { name: 'fulltree', version: '1.0.0', bulkBytes: 12 * MiB });
  const pub = await a.json(['publish', src]);
  await waitFor('b extracts part of fulltree', async () => {
    const tr = (await b.json(['status'])).swarm.transfers.find((x: any) => x.name === 'fulltree');
    return tr && tr.installedChunks >= 2;
  }, 120_000, 100);

  const filler = path.join(runtimes, 'filler');
  const fh = await fs.open(filler, 'w');
  for (const piece of [MiB, 64 * 1024, 4096]) {
    const buf = Buffer.alloc(piece, 1);
    for (;;) {
      try {
        if ((await fh.write(buf)).bytesWritten < piece) break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        break;
      }
    }
  }
  await fh.close();

  const s = await waitFor('b reports the full runtimes dir', async () => {
    const st = await b.json(['status']);
    return st.store.waitingForSpace.find((w: any) => w.kind === 'disk-full') && !st.swarm.transfers.length ? st : null;
  }, 120_000, 300);
  t.is(s.store.waitingForSpace[0].manifestId, pub.manifestId);
  t.regex(s.store.waitingForSpace[0].reason, /^fulltree@1\.0\.0 stopped: the disk is full \(ENOSPC: /);
  t.deepEqual(await listAll(path.join(runtimes, '.joblet-agent', 'staging')), [], 'the staging dir is gone');
  t.false(await fs.access(path.join(runtimes, 'fulltree')).then(() => true, () => false));
  t.deepEqual((await listAll(b.dataDir)).filter((p) => p.includes('.tmp-')), []);
  await new Promise((r) => setTimeout(r, 8_000));
  t.is(count(b.logs(), 'disk_full name=fulltree'), 1);
  t.is(count(b.logs(), 'install_failed name=fulltree'), 0);
  t.is(count(b.logs(), 'fetch_failed name=fulltree'), 0);

  await fs.rm(filler);
  await waitFor('b installs fulltree after space returned', async () => (await installedManifest(b, 'fulltree')) === pub.manifestId, 180_000, 300);
  t.deepEqual(await comparable(path.join(runtimes, 'fulltree', '1.0.0')), await comparable(path.join(a.runtimesDir, 'fulltree', '1.0.0')));
  t.deepEqual(await listAll(path.join(runtimes, '.joblet-agent', 'staging')), []);
});
