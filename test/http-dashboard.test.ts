// The fleet dashboard end to end: real agents, Debian's Chromium driven by playwright-core (no browser
// download). A runtime published on one host is seen reaching every host; a runtime for another
// architecture shows as skipped everywhere; the page fetches nothing but from its agent.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { tmpDir, startFleet, waitFor } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

const CHROMIUM = '/usr/bin/chromium';
const present = await fs.access(CHROMIUM).then(() => true, () => false);
const isRoot = process.getuid?.() === 0;
const maybe = present || isRoot ? test : test.skip;
const title = present || isRoot
  ? 'the dashboard shows a published runtime reach every host, and a foreign-architecture one skipped'
  : `the dashboard in Chromium (SKIPPED: ${CHROMIUM} is missing; apt-get install chromium)`;

maybe(title, async (t) => {
  const root = await tmpDir(t, 'ja-dash-');
  // The publisher serves slowly, so the transfer is visible for a while.
  const fleet = await startFleet(t, root, 3, { env: (i) => (i === 0 ? { JOBLET_AGENT_TEST_FAULT: 'slow:500' } : undefined) });
  const statuses = await Promise.all(fleet.map((a) => a.json(['status'])));
  const url = statuses[1].http as string; // a non-publisher's dashboard: what it knows came over the fleet
  await waitFor('every agent knows the others', async () =>
    (await fleet[1].json(['status'])).swarm.peers.length >= 2, 60_000);

  const profile = await tmpDir(t, 'ja-chromium-');
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
    viewport: { width: 1400, height: 1000 },
  });
  t.teardown(() => browser.close());
  const page = browser.pages()[0] ?? await browser.newPage();
  const requests: string[] = [];
  page.on('request', (r) => { requests.push(r.url()); });
  const errors: string[] = [];
  page.on('pageerror', (e) => { errors.push(e.message); });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(url);
  await page.waitForSelector('.live:not(.stale)', { timeout: 30_000 });
  // Every host of the fleet gets a row before anything is published (the state gossip names them).
  await page.waitForFunction("document.querySelectorAll('#grid tbody tr[data-host]').length === 3", undefined, { timeout: 60_000 });

  // The third host cannot install: its runtimes dir is a file (an operator's mistake). It shows as failed
  // with the error, and recovers once the directory is back.
  const broken = fleet[2];
  await fs.rm(broken.runtimesDir, { recursive: true, force: true });
  await fs.writeFile(broken.runtimesDir, 'not a directory\n');
  const src = path.join(root, 'pkg', 'webrt');
  await makeRuntimeTree(src, { name: 'webrt', version: '2.1.0', bulkBytes: 6 * 1024 * 1024 });
  const pub = await fleet[0].json(['publish', src]);
  const shots = process.env.JOBLET_AGENT_SCREENSHOTS; // a directory to keep the screenshots in, for a person to look at
  const cell = (host: string, manifest: string) => `#grid td[data-host="${host}"][data-manifest="${manifest}"]`;
  // Caught while it moves, if the machine is slow enough to let us: a progress bar on some host.
  const moving = await page.waitForSelector('#grid td[data-state="downloading"], #transfers .transfer', { timeout: 20_000 }).catch(() => null);
  if (moving && shots) await page.screenshot({ path: path.join(shots, 'dashboard-downloading.png'), fullPage: true });
  const failed = await page.waitForSelector(`${cell(statuses[2].peerId, pub.manifestId)}[data-state="failed"]`, { timeout: 90_000 });
  t.regex(await failed.innerText(), /failed[\s\S]*(ENOTDIR|not a directory|EEXIST)/);
  if (shots) await page.screenshot({ path: path.join(shots, 'dashboard-failed.png'), fullPage: true });
  await fs.rm(broken.runtimesDir, { force: true });
  await fs.mkdir(broken.runtimesDir);

  const foreign = path.join(root, 'pkg', 'foreign');
  await makeRuntimeTree(foreign, { name: 'foreignrt', version: '1.0.0', bulkBytes: 256 * 1024 });
  const other = process.arch === 'arm64' ? 'amd64' : 'arm64';
  await fs.appendFile(path.join(foreign, 'runtime.yml'), `requirements:\n  architectures: [${other}]\n`);
  const pubForeign = await fleet[0].json(['publish', foreign]);

  for (const s of statuses) {
    await page.waitForSelector(`${cell(s.peerId, pub.manifestId)}[data-state="installed"]`, { timeout: 120_000 });
    await page.waitForSelector(`${cell(s.peerId, pubForeign.manifestId)}[data-state="skipped"]`, { timeout: 60_000 });
  }
  t.is(await page.locator(`#grid td[data-manifest="${pub.manifestId}"][data-state="installed"]`).count(), 3);
  t.regex(await page.locator(`#grid td[data-manifest="${pubForeign.manifestId}"]`).first().innerText(), new RegExp(`skipped: needs ${other}`));
  const headers = await page.locator('#grid thead th.rt').allInnerTexts();
  t.true(headers.some((h) => /webrt\s+2\.1\.0/.test(h)), headers.join(' | '));
  // The other panels: peers with their RTT, and the install among the recent events.
  await page.waitForFunction("/\\d+ ms/.test(document.getElementById('peers').textContent)", undefined, { timeout: 30_000 });
  t.is(await page.locator('#peers tbody tr').count(), 2);
  await page.waitForFunction("/installed/.test(document.getElementById('events').textContent)", undefined, { timeout: 30_000 });
  const shot = path.join(root, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  if (shots) await fs.copyFile(shot, path.join(shots, 'dashboard-installed.png'));
  t.true((await fs.stat(shot)).size > 10_000);

  const origin = new URL(url).origin;
  const outside = requests.filter((r) => !r.startsWith(origin + '/'));
  t.deepEqual(outside, [], 'the page fetched nothing from anywhere but its agent');
  t.true(requests.some((r) => r === origin + '/api/status'));
  t.deepEqual(errors, []);
});
