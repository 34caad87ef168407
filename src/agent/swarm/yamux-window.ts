import { yamux } from '@chainsafe/libp2p-yamux';
import { StreamState } from '@chainsafe/libp2p-yamux/stream';
import type { StreamMuxerFactory } from '@libp2p/interface';

type YamuxInit = Parameters<typeof yamux>[0];

/** What js-yamux's stream has that this module relies on (not part of its typed API). */
interface WindowedStream {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
  sendWindowUpdate(): void;
}

/** What js-yamux's muxer has that this module relies on: every stream, inbound or outbound, is made here. */
interface StreamMaking {
  _newStream(streamId: number, state: StreamState, direction: string): unknown;
}

function isWindowedStream(s: unknown): s is WindowedStream {
  const w = s as Partial<WindowedStream> | null;
  return typeof w?.sendWindowUpdate === 'function' && typeof w.recvWindow === 'number' && typeof w.recvWindowCapacity === 'number';
}

/**
 * Send a window update only once half the receive window is used, as go-yamux and hashicorp/yamux do. js-yamux
 * sends one after EVERY data frame it receives: a 100-byte have1 message is answered by a 12-byte update, each a
 * Noise message, a socket write and a read, decrypt and dispatch on the other side, which doubles the cost of
 * every small message and adds one write per 256 KiB of chunk data. Opening flags (SYN, ACK) and a paused stream
 * go through js-yamux's own logic unchanged, and an update that is due (half the window used) still grows the
 * window as js-yamux does, so the peer never waits for an update it would otherwise get: it always has at least
 * half a window to send.
 */
export function lazyWindowUpdates(stream: WindowedStream): void {
  const send = stream.sendWindowUpdate.bind(stream);
  stream.sendWindowUpdate = () => {
    const routine = stream.state === StreamState.Established || stream.state === StreamState.SYNSent;
    if (routine && stream.recvWindowCapacity > stream.recvWindow / 2) return;
    send();
  };
}

/**
 * Make every stream of a js-yamux muxer send lazy window updates. False if the muxer is not js-yamux's as
 * expected; `onOddStream` hears of a stream that is not (it keeps js-yamux's own updates).
 */
export function lazyWindowUpdatesFor(muxer: unknown, onOddStream: () => void): boolean {
  const m = muxer as Partial<StreamMaking> | null;
  if (typeof m?._newStream !== 'function') return false;
  const newStream = m._newStream.bind(m);
  m._newStream = (streamId, state, direction) => {
    const stream = newStream(streamId, state, direction);
    if (isWindowedStream(stream)) lazyWindowUpdates(stream);
    else onOddStream();
    return stream;
  };
  return true;
}

/**
 * js-yamux with window updates sent when half the window is used (see lazyWindowUpdates). The frames on the wire
 * are yamux's own, only fewer of them, so a stock js-yamux or go-yamux peer talks to it unchanged. If a js-yamux
 * release no longer has the internals this relies on, muxers work with the library's own updates and
 * `onFallback` is told once (the daemon logs it).
 */
export function yamuxWithLazyWindowUpdates(init: YamuxInit, onFallback: () => void = () => {}): () => StreamMuxerFactory {
  const factory = yamux(init);
  let warned = false;
  const fallback = () => {
    if (warned) return;
    warned = true;
    onFallback();
  };
  return () => {
    const muxers = factory();
    const create = muxers.createStreamMuxer.bind(muxers);
    muxers.createStreamMuxer = (maConn) => {
      const muxer = create(maConn);
      if (!lazyWindowUpdatesFor(muxer, fallback)) fallback();
      return muxer;
    };
    return muxers;
  };
}
