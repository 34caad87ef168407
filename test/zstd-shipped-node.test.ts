// The zstd tests (store-zstd.test.ts) need a Node with zstd. Development runs Node 20, which has none, so here
// they run under the Node the release artifact carries (scripts/release/node-binaries), fetched as a release
// build fetches it: otherwise this suite would never exercise the codec every shipped agent uses.
import test from 'ava';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { fetchNode, type Arch } from '../scripts/release/node-binary.js';
import { ZSTD_AVAILABLE } from '../src/store/zstd.js';
import { execFileP } from './helpers/agent.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arch = os.arch();
// Where this Node has zstd, store-zstd.test.ts runs in this suite directly.
const needed = !ZSTD_AVAILABLE && os.platform() === 'linux' && (arch === 'x64' || arch === 'arm64');

(needed ? test : test.skip)('the zstd tests pass under the Node a release carries', async (t) => {
  // A cache of its own: the release test fetches into release/.cache at the same time.
  const node = await fetchNode(repoRoot, arch as Arch, path.join(repoRoot, 'release', '.cache-zstd-test'));
  const { stdout: version } = await execFileP(node.path, ['--version']);
  t.log(`running store-zstd.test.js under node ${version.trim()}`);
  const ava = path.join(repoRoot, 'node_modules/ava/entrypoints/cli.mjs');
  const run = await execFileP(node.path, [ava, '--tap', 'dist/test/store-zstd.test.js'], { cwd: repoRoot, timeout: 120_000 })
    .catch((err: { stdout?: string; stderr?: string; code?: number }) => err);
  const out = `${run.stdout ?? ''}`;
  t.regex(out, /^# pass 4$/m, `${out}\n${run.stderr ?? ''}`);
  t.notRegex(out, /^# (fail|skip) [1-9]/m, out);
  t.notRegex(out, /^not ok/m, out);
});
