// CLI side of `verify` (chunks and installed trees) and `repair [NAME[@VERSION]]`.
import { callDaemon } from '../control.js';

interface Changed { path: string; what: string[] }
interface RuntimeCheck {
  name: string; version: string; manifestId: string; path: string; state: 'ok' | 'drifted' | 'deleted' | 'unchecked';
  changed: Changed[]; added: string[]; missing: string[]; entries: number; error: string | null;
}
interface VerifyResult { checked: number; corrupt: { id: string; error: string }[]; missing: string[]; runtimes: RuntimeCheck[] }
interface RepairOutcome {
  name: string; version: string; result: 'repaired' | 'clean' | 'skipped' | 'failed';
  drift: Pick<RuntimeCheck, 'state' | 'changed' | 'added' | 'missing'>; error: string | null; at: string;
}

/** A path as found on disk may hold anything: control characters are shown escaped, not sent to the terminal. */
function shown(p: string): string {
  return p.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The lines describing one runtime's drift, indented under its name. */
function driftLines(d: Pick<RuntimeCheck, 'state' | 'changed' | 'added' | 'missing' | 'path'>): string[] {
  if (d.state === 'deleted') return [`  deleted  ${d.path} (the runtime dir is gone)`];
  return [
    ...d.changed.map((c) => `  changed  ${shown(c.path)} (${c.what.join(', ')})`),
    ...d.added.map((p) => `  added    ${shown(p)}`),
    ...d.missing.map((p) => `  missing  ${shown(p)}`),
  ];
}

export async function runVerify(socket: string, json: boolean): Promise<void> {
  const res = (await callDaemon(socket, { cmd: 'verify' })) as VerifyResult;
  const drifted = res.runtimes.filter((r) => r.state !== 'ok');
  if (res.corrupt.length || res.missing.length || drifted.length) process.exitCode = 1;
  if (json) { console.log(JSON.stringify(res, null, 2)); return; }
  console.log(`checked ${res.checked} chunks: ${res.corrupt.length} corrupt, ${res.missing.length} missing`);
  for (const c of res.corrupt) console.log(`corrupt  ${c.error} (deleted; fetched again from the fleet)`);
  for (const id of res.missing) console.log(`missing  ${id}`);
  console.log(`checked ${res.runtimes.length} installed runtimes: ${drifted.length} differ from their manifests`);
  for (const r of res.runtimes) {
    const what = r.state === 'ok' ? `ok (${r.entries} entries)` : r.state === 'unchecked' ? `not checked: ${r.error}` : r.state;
    console.log(`${r.name}@${r.version}  ${what}`);
    for (const line of driftLines(r)) console.log(line);
  }
  if (drifted.some((r) => r.state === 'drifted' || r.state === 'deleted')) console.log('run "joblet-agent repair" to restore them from their chunks');
}

export async function runRepair(socket: string, name: string | undefined, version: string | undefined, json: boolean): Promise<void> {
  const res = (await callDaemon(socket, { cmd: 'repair', args: { name, version } })) as { outcomes: RepairOutcome[]; note: string | null };
  if (res.outcomes.some((o) => o.result === 'failed')) process.exitCode = 1;
  if (json) { console.log(JSON.stringify(res, null, 2)); return; }
  if (res.note) console.log(res.note);
  for (const o of res.outcomes) {
    const label = `${o.name}@${o.version}`;
    if (o.result === 'clean') console.log(`${label} matches its manifest: nothing to repair`);
    else if (o.result === 'skipped') console.log(`${label} was removed or replaced while it was being repaired: nothing was changed`);
    else if (o.result === 'failed') console.log(`${label} could not be repaired: ${o.error}`);
    else {
      console.log(`repaired ${label}; it had:`);
      for (const line of driftLines({ ...o.drift, path: label })) console.log(line);
    }
  }
}
