// The fleet key: a 32-byte secret every member holds, mixed into the Noise handshake. Kept apart from
// p2p-node.ts so that `init` and other CLI commands do not load libp2p (about 1.7 s of start-up here).

import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';

const FLEET_KEY_BYTES = 32;
const PROLOGUE_LABEL = 'joblet-agent fleet v1';

/**
 * Noise prologue for a fleet. Both ends mix the prologue into the handshake transcript, so a peer holding a
 * different fleet key fails the handshake's first authenticated message and no connection is ever reported on
 * either side. The secret itself never goes on the wire, and unlike a pre-shared-key transport wrapper this
 * costs nothing once the connection is up.
 */
export function fleetPrologue(fleetKey: Buffer): Uint8Array {
  if (fleetKey.length !== FLEET_KEY_BYTES) {
    throw new Error(`fleet key must be ${FLEET_KEY_BYTES} bytes, got ${fleetKey.length}`);
  }
  return createHmac('sha256', fleetKey).update(PROLOGUE_LABEL).digest();
}

/** A new random fleet key as 64 hex characters, the format `fleetKeyFromFile` reads. */
export function generateFleetKey(): string {
  return randomBytes(FLEET_KEY_BYTES).toString('hex');
}

/** Read a fleet key file holding 64 hex characters (surrounding whitespace allowed). */
export async function fleetKeyFromFile(path: string): Promise<Buffer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read fleet key file ${path}: ${(err as Error).message}`);
  }
  const hex = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new Error(`fleet key file ${path} must hold exactly 64 hex characters (a 32-byte key)`);
  }
  return Buffer.from(hex, 'hex');
}
