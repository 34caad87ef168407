// Bounds on inbound connections that have not finished their handshake.
//
// Before the Noise handshake completes nobody has proved anything, and libp2p holds a connection in that state
// for up to the inbound upgrade timeout, within one global cap (maxIncomingPendingConnections). Left alone, a
// stranger opening idle TCP connections from one address fills that cap and fleet members are refused until
// the stranger's connections time out. This gate gives every remote address its own small share of pending
// handshakes: beyond it, a new connection from that address is closed at once and the global cap is never
// reached from one address.
import type { ConnectionGater, MultiaddrConnection } from '@libp2p/interface';

/** Pending handshakes allowed per remote IP address. */
export const PENDING_HANDSHAKES_PER_ADDRESS = 8;

export interface PendingGate {
  gater: Pick<ConnectionGater, 'denyInboundConnection' | 'denyInboundEncryptedConnection'>;
  /** Pending handshakes now, per remote address (for tests and status). */
  pending(): Map<string, number>;
  /** Connections refused because their address had its share pending. */
  refused(): number;
}

function hostOf(maConn: MultiaddrConnection): string {
  const ip = maConn.remoteAddr.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6');
  return ip?.value ?? maConn.remoteAddr.toString();
}

export function pendingHandshakeGate(perAddress = PENDING_HANDSHAKES_PER_ADDRESS): PendingGate {
  const pending = new Map<string, Set<MultiaddrConnection>>();
  let refused = 0;
  const release = (host: string, maConn: MultiaddrConnection): void => {
    const set = pending.get(host);
    if (set === undefined) return;
    set.delete(maConn);
    if (set.size === 0) pending.delete(host);
  };
  return {
    gater: {
      denyInboundConnection: (maConn) => {
        const host = hostOf(maConn);
        let set = pending.get(host);
        if (set === undefined) {
          set = new Set();
          pending.set(host, set);
        }
        if (set.size >= perAddress) {
          refused++;
          return true;
        }
        set.add(maConn);
        // Released when the handshake completes (below) or the connection ends (failed, timed out, closed).
        maConn.addEventListener('close', () => release(host, maConn), { once: true });
        return false;
      },
      denyInboundEncryptedConnection: (_peer, maConn) => {
        release(hostOf(maConn), maConn);
        return false;
      },
    },
    pending: () => new Map([...pending].map(([h, s]) => [h, s.size])),
    refused: () => refused,
  };
}
