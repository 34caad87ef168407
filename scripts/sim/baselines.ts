// The two ways the joblet deployment guide's operator would do it, over the same shaped network:
// one HTTP server on host 0 that every other host downloads from at once, and a sequential loop
// that copies to one host after another and unpacks there.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Resources } from './cleanup.js';
import { stopGroup } from './sh.js';
import type { Host } from './topology.js';

export const HTTP_PORT = 8080;

/** The baselines a run can time after the agents (the BitTorrent one lives in bittorrent.ts). */
export const BASELINE_NAMES = ['bittorrent', 'central', 'sequential'] as const;
export type BaselineName = (typeof BASELINE_NAMES)[number];

/** A tiny static server for one file: it streams the file for every GET. */
const SERVER = `
const http = require('node:http'), fs = require('node:fs');
const [file, addr, port] = process.argv.slice(1);
const size = fs.statSync(file).size;
http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
  fs.createReadStream(file).pipe(res);
}).listen(Number(port), addr, () => console.log('listening'));
`;

/** Start the server inside host 0's namespace; resolves once it listens. Returns its pid. */
export async function startHttpServer(host: Host, file: string, res: Resources): Promise<number> {
  const child = spawn('ip', ['netns', 'exec', host.ns, process.execPath, '-e', SERVER, file, host.addr, String(HTTP_PORT)],
    { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start the HTTP server in ${host.ns}`);
  res.pids.add(child.pid);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the HTTP server in ${host.ns} did not start within 30 s`)), 30_000);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => { if (String(d).includes('listening')) { clearTimeout(timer); resolve(); } });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the HTTP server in ${host.ns} exited with ${code}: ${err.trim()}`)); });
  });
  child.stdout!.resume();
  return child.pid;
}

/** Run a shell command inside a namespace (as its own process group), resolving with the time it ended. */
function runIn(ns: string, script: string, res: Resources, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', script], { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    if (child.pid === undefined) { reject(new Error(`could not run a shell in ${ns}`)); return; }
    const pid = child.pid;
    res.pids.add(pid);
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const timer = setTimeout(() => { void stopGroup(pid, 1000); }, timeoutMs);
    child.on('exit', (code, signal) => {
      const end = Date.now();
      clearTimeout(timer);
      res.pids.delete(pid);
      if (code === 0) resolve(end);
      else reject(new Error(`in ${ns}: "${script}" ${signal ? `was stopped (${signal}) after the ${timeoutMs} ms limit` : `exited with ${code}`}: ${err.trim()}`));
    });
  });
}

export interface BaselineRun { finishedMs: number[]; dirs: string[] }

const url = (server: Host) => `http://${server.addr}:${HTTP_PORT}/pkg.tar.gz`;

/** Every other host downloads from the server at the same time and unpacks while it downloads. */
export async function centralServer(server: Host, clients: Host[], workDir: string, res: Resources, timeoutMs: number): Promise<BaselineRun> {
  const dirs = clients.map((h) => path.join(workDir, 'central', `h${h.index}`));
  for (const d of dirs) await fs.mkdir(d, { recursive: true });
  const start = Date.now();
  const ends = await Promise.all(clients.map((h, i) =>
    runIn(h.ns, `curl -sSf ${url(server)} | tar -xzf - -C ${dirs[i]}`, res, timeoutMs)));
  return { finishedMs: ends.map((e) => e - start), dirs };
}

/** The copy loop: host after host, copy the archive, then unpack it there. */
export async function sequentialCopy(server: Host, clients: Host[], workDir: string, res: Resources, timeoutMs: number): Promise<BaselineRun> {
  const dirs = clients.map((h) => path.join(workDir, 'sequential', `h${h.index}`));
  const start = Date.now();
  const finishedMs: number[] = [];
  for (const [i, h] of clients.entries()) {
    await fs.mkdir(dirs[i], { recursive: true });
    const left = timeoutMs - (Date.now() - start);
    if (left <= 0) throw new Error(`the sequential copy loop passed its ${timeoutMs} ms limit at host ${h.index}`);
    const end = await runIn(h.ns, `curl -sSf -o ${dirs[i]}/pkg.tar.gz ${url(server)} && tar -xzf ${dirs[i]}/pkg.tar.gz -C ${dirs[i]} && rm ${dirs[i]}/pkg.tar.gz`, res, left);
    finishedMs.push(end - start);
  }
  return { finishedMs, dirs };
}
