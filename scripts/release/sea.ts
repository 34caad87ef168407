// The single executable: dist JS bundled by esbuild into one CommonJS file, turned into a Node SEA blob, and
// injected with postject into a stripped copy of the pinned Node binary.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import path from 'node:path';
import * as esbuild from 'esbuild';
import type { NodeBinary } from './node-binary.js';
import { DAEMON_NODE_FLAGS } from '../../src/agent/node-flags.js';

const execFileP = promisify(execFile);

// The fuse string that Node's SEA support looks for in its own binary (doc/api/single-executable-applications).
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

/** Bundle the CLI (already compiled to dist/) and everything it imports into one file. */
export async function bundle(repoRoot: string, outFile: string, nodeMajor: number): Promise<void> {
  const shim = path.join(repoRoot, 'scripts/release/native-binding.cjs');
  const result = await esbuild.build({
    entryPoints: [path.join(repoRoot, 'dist/src/agent/cli/main.js')],
    outfile: outFile,
    bundle: true,
    platform: 'node',
    // CommonJS: the SEA main script of Node 22/24 is run as CommonJS; esbuild keeps module evaluation order, so
    // the polyfill main.ts imports first still runs before libp2p.
    format: 'cjs',
    target: `node${nodeMajor}`,
    logLevel: 'silent',
    legalComments: 'none',
    plugins: [{
      name: 'classic-level-addon-beside-executable',
      setup(build) {
        // classic-level finds its addon with node-gyp-build under its package dir, which a SEA does not have.
        build.onResolve({ filter: /^\.\/binding(\.js)?$/ }, (args) =>
          args.importer.includes(`${path.sep}classic-level${path.sep}`) ? { path: shim } : undefined);
      },
    }],
  });
  for (const w of result.warnings) console.error(`esbuild: ${w.text}`);
  const text = await fs.readFile(outFile, 'utf8');
  if (!text.includes('classic-level.node')) throw new Error('the bundle does not use the addon shim: classic-level changed how it loads its binding');
}

/** strip for the binary's architecture: the host's binutils handle x64 only. */
async function strip(file: string, arch: NodeBinary['arch']): Promise<void> {
  const tools = arch === 'x64' ? ['strip'] : ['aarch64-linux-gnu-strip', 'strip'];
  const errors: string[] = [];
  for (const tool of tools) {
    try {
      await execFileP(tool, ['--strip-all', file]);
      return;
    } catch (err) {
      errors.push(`${tool}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`cannot strip the ${arch} node binary (${errors.join('; ')}); install binutils${arch === 'x64' ? '' : '-aarch64-linux-gnu'}`);
}

/**
 * Build the executable at outFile from the bundle. hostNode runs here and has the same version as target:
 * the blob must come from the same Node version, and without a code cache it does not depend on the architecture.
 */
export async function buildExecutable(opts: { bundleFile: string; target: NodeBinary; hostNode: NodeBinary; outFile: string; workDir: string; repoRoot: string }): Promise<void> {
  const { bundleFile, target, hostNode, outFile, workDir } = opts;
  if (hostNode.version !== target.version) throw new Error(`blob maker node ${hostNode.version} differs from target ${target.version}`);
  const blob = path.join(workDir, `sea-${target.arch}.blob`);
  const config = path.join(workDir, `sea-${target.arch}.json`);
  await fs.writeFile(config, JSON.stringify({
    main: bundleFile,
    output: blob,
    disableExperimentalSEAWarning: true,
    // Both off so that one blob fits every architecture (a code cache or snapshot is specific to the V8 build).
    useSnapshot: false,
    useCodeCache: false,
    // The daemon's V8 flags (src/agent/node-flags.ts); NODE_OPTIONS may still add to them.
    execArgv: [...DAEMON_NODE_FLAGS],
  }, null, 2));
  await execFileP(hostNode.path, ['--experimental-sea-config', config]);
  await fs.copyFile(target.path, outFile);
  await fs.chmod(outFile, 0o755);
  // Before injecting: stripping afterwards would drop the injected blob's note section.
  await strip(outFile, target.arch);
  const postject = path.join(opts.repoRoot, 'node_modules/postject/dist/cli.js');
  await execFileP(process.execPath, [postject, outFile, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], { maxBuffer: 16 * 1024 * 1024 });
}
