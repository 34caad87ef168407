// Faults 9 and 10 with real agent processes: a publisher whose clock runs ahead, and hosts that have no
// publisher key (init --join) or one that nobody trusts.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cli, tmpDir, startAgent, startFleet, waitFor, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';
import { generatePublisherKeys } from '../src/store/manifest.js';

const SKEWED_CLOCK = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'skewed-clock.js');

async function names(a: AgentHandle): Promise<string[]> {
  return (await a.json(['list'])).map((r: any) => `${r.name}@${r.version}`).sort();
}

test('a publisher whose clock runs 2 hours ahead: its manifests and removals are refused, naming the skew', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2);
  const good = path.join(root, 'good');
  await makeRuntimeTree(good, { name: 'good', version: '1.0.0', bulkBytes: 256 * 1024 });
  await a.json(['publish', good]);
  await waitFor('b installs good@1.0.0', async () => (await names(b)).includes('good@1.0.0'));

  // The same publisher restarts with its clock two hours ahead; it dials b (its own port changed).
  const bAddr = (await b.json(['status'])).addresses[0] as string;
  await a.stop();
  const skewed = await startAgent(t, a.dir, ['--bootstrap', bAddr], {
    env: { NODE_OPTIONS: `--import=${pathToFileURL(SKEWED_CLOCK).href}`, SKEWED_CLOCK_OFFSET_MS: String(2 * 3_600_000) },
  });
  const future = path.join(root, 'future');
  await makeRuntimeTree(future, { name: 'future', version: '1.0.0', bulkBytes: 256 * 1024 });
  const pub = await skewed.json(['publish', future]);
  t.true(Date.parse((await skewed.json(['status'])).swarm.fleet.find((f: any) => f.name === 'future').createdAt) > Date.now() + 3_000_000,
    'the skewed publisher really dated its manifest ahead');
  t.true((await skewed.json(['remove', 'good'])).signed);

  await waitFor('b refuses the future manifest, naming the skew', async () =>
    new RegExp(`ignoring manifest ${pub.manifestId} .*\\(future@1\\.0\\.0\\) is dated \\S+, 2 hours ahead of this host's clock`).test(b.logs()));
  await waitFor('b refuses the future removal, naming the skew', async () =>
    /removal of good is dated \S+, 2 hours ahead of this host's clock/.test(b.logs()));
  t.deepEqual(await names(b), ['good@1.0.0'], 'b keeps good and never installs future');
  t.true(await fs.stat(path.join(b.runtimesDir, 'good', '1.0.0', 'runtime.yml')).then(() => true, () => false));
});

test('init --join makes no publisher key; remove there and on a host with an untrusted key says it applies here only', async (t) => {
  const root = await tmpDir(t);
  const a = await startAgent(t, path.join(root, 'a'));
  const etc = path.join(a.dir, 'etc');
  const addr = (await a.json(['status'])).addresses[0] as string;

  // Usage: --join needs the fleet key.
  const noKey = await cli(['init', '--join', '--dir', path.join(root, 'x')]);
  t.is(noKey.code, 2);
  t.regex(noKey.stderr, /init --join needs --fleet-key FILE/);

  const joinArgs = ['--join', '--fleet-key', path.join(etc, 'fleet.key'), '--trust', path.join(etc, 'publisher.pub'), '--bootstrap', addr];
  const b = await startAgent(t, path.join(root, 'b'), [], { initArgs: joinArgs });
  t.deepEqual((await fs.readdir(path.join(b.dir, 'etc'))).sort(), ['config.yml', 'fleet.key'], 'no publisher key files');
  t.notRegex(await fs.readFile(b.config, 'utf8'), /publisherKey/);
  const bStatus = await b.json(['status']);
  t.is(bStatus.publisher, null);
  t.deepEqual(bStatus.trust, [(await fs.readFile(path.join(etc, 'publisher.pub'), 'utf8')).trim()]);

  // A host that has a publisher key which is not in its own trust list (and so in nobody's).
  const stray = generatePublisherKeys();
  const strayKey = path.join(root, 'stray.key');
  await fs.writeFile(strayKey, stray.privatePem, { mode: 0o600 });
  const c = await startAgent(t, path.join(root, 'c'), ['--publisher-key', strayKey], { initArgs: joinArgs });
  t.is((await c.json(['status'])).publisher, stray.publicKey);
  t.regex(c.logs(), new RegExp(`publisher key ${stray.publicKey} is not in this agent's trust list`));

  for (const v of ['1.0.0', '2.0.0']) {
    const src = path.join(root, `pkg-${v}`);
    await makeRuntimeTree(src, { name: 'joined', version: v, seed: v, bulkBytes: 256 * 1024 });
    await a.json(['publish', src]);
  }
  for (const x of [b, c]) await waitFor(`${x.dir} installs both`, async () => (await names(x)).length === 2);

  const rb = await b.run(['remove', 'joined']);
  t.is(rb.code, 0, rb.stderr);
  t.regex(rb.stdout, /removed on this host only \(this agent has no publisher key\)/);
  t.notRegex(rb.stdout, /signed removal/);

  const rcText = await c.run(['remove', 'joined@1.0.0']);
  t.is(rcText.code, 0, rcText.stderr);
  t.regex(rcText.stdout, new RegExp(`a signed removal of joined@1\\.0\\.0 was sent, but this agent's publisher key ${stray.publicKey} is not in its own trust list, so the other hosts most likely do not trust it`));
  const rc = await c.json(['remove', 'joined@2.0.0']);
  t.like(rc, { signed: true, publisherTrusted: false, publisher: stray.publicKey });
  t.deepEqual(await names(c), []);

  // The publisher really ignored the stray removal: it still has the runtime, and said why.
  await waitFor('a ignores the untrusted removals', async () =>
    new RegExp(`removal of joined@2\\.0\\.0 is signed by ${stray.publicKey}, which is not a trusted publisher`).test(a.logs()));
  t.deepEqual(await names(a), ['joined@1.0.0', 'joined@2.0.0']);
  const ra = await a.json(['remove', 'joined']);
  t.like(ra, { signed: true, publisherTrusted: true });
});
