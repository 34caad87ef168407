/**
 * '/joblet-agent/chunks/1': request/response chunk exchange on one long-lived stream per peer pair.
 *
 * The requester opens a stream and pipelines `get` requests on it; the server answers each with the stored
 * chunk bytes (`chunk` + payload), `miss`, or `busy` when its upload cap is reached so the requester can go to
 * another holder. Responses may come back in any order; `rid` matches them to requests.
 *
 * Nothing here trusts the remote: frames are size-capped, messages strictly validated, and the bytes of a chunk
 * are only accepted once the store has verified them against the chunk id (see `fetchAndStore`).
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';

import type { ChunkRef, Codec } from '../store/types.js';
import { ZSTD_AVAILABLE } from '../store/zstd.js';
import { asError, FrameReader, FrameWriter } from './frames.js';
import type { RateLimiter } from './rate-limit.js';
import {
  MAX_STORED_CHUNK_SIZE,
  parseChunkRequest,
  parseChunkResponse,
  type ChunkGet,
  type ChunkResponseMessage,
} from './messages.js';

export const CHUNK_PROTOCOL = '/joblet-agent/chunks/1';

/** Requests are tiny; a header over this is garbage, whoever sent it. */
const MAX_MESSAGE_HEADER_BYTES = 4096;
/** Parsed-but-unhandled requests held before the server pauses reading from a peer. */
const SERVER_READ_HIGH_WATER = 64 * 1024;
/** Streams one connection may open to the server at once (one in steady state, a few while re-opening). */
const MAX_INBOUND_STREAMS_PER_CONNECTION = 8;

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Uploads one peer may hold at once when the caller does not say: the downloader's own pipelining depth. */
export const DEFAULT_UPLOADS_PER_PEER = 4;
/**
 * How long one answer may take to leave, from the request being taken to its last byte being handed to the
 * muxer. A 4 MiB chunk needs under 1 s at 50 Mbit/s; a peer whose window stays shut this long is not reading.
 * It is longer than the requester's own timeout (DEFAULT_REQUEST_TIMEOUT_MS), so an honest slow peer gives up first.
 */
export const DEFAULT_UPLOAD_DEADLINE_MS = 40_000;

/** A chunk as kept by the store and sent on the wire. */
export interface StoredChunk {
  codec: Codec;
  /** Stored (possibly compressed) bytes. */
  data: Buffer;
  /** Uncompressed size. */
  size: number;
}

/** What the server needs from the chunk store (structurally a subset of src/store ChunkStore). */
export interface ChunkSource {
  /** Rejects when the chunk is not held (or fails its check): the server answers `miss`. */
  getStored(id: string): Promise<StoredChunk>;
  /** The verified uncompressed bytes, for a requester that cannot decode the stored codec (zstd). */
  get?(id: string): Promise<Buffer>;
}

/** What `fetchAndStore` needs from the chunk store: a write that verifies the bytes against the id. */
export interface ChunkSink {
  putStored(id: string, codec: Codec, stored: Buffer, size: number): Promise<ChunkRef>;
}

type ServerNode = Pick<Libp2p, 'handle' | 'unhandle'>;
type ClientNode = Pick<Libp2p, 'dialProtocol'>;

// ---------------------------------------------------------------------------------------------------------------
// Server

export interface ChunkServerOptions {
  /**
   * Chunk uploads this agent runs at once, over all peers and streams. An upload holds one stored chunk in
   * memory from the store read until its last byte is handed to the muxer, so this also bounds upload memory.
   * Requests beyond the cap are answered `busy` at once.
   */
  maxConcurrentUploads: number;
  /**
   * Uploads one remote peer (all its streams together) may hold at once, within the global cap; requests beyond
   * it are answered `busy`. Without a share of its own per peer, one peer that never reads could hold every slot.
   */
  maxUploadsPerPeer?: number;
  /**
   * Deadline per answer (see DEFAULT_UPLOAD_DEADLINE_MS). A peer that misses it is not reading: its stream is
   * reset, its slots are freed at once and the drop is counted.
   */
  uploadDeadlineMs?: number;
  /**
   * TEST ONLY: rewrites (or delays) the stored bytes of each chunk just before they are sent, so tests can make
   * a peer serve corrupt data or serve slowly. Never set it in the daemon.
   */
  faultHook?: (id: string, data: Buffer) => Buffer | Promise<Buffer>;
  /** The host-wide upload cap, shared by every peer and stream; absent = uncapped. */
  uploadLimit?: RateLimiter;
}

export interface PeerServeStats {
  bytes: number;
  chunks: number;
  misses: number;
  busy: number;
  /** Streams of this peer reset because an answer missed its deadline (the peer did not read). */
  dropped: number;
}

export interface ChunkServerStats {
  activeUploads: number;
  bytesServed: number;
  chunksServed: number;
  /** Per remote peer id (string form). */
  perPeer: Map<string, PeerServeStats>;
  /** Streams reset because the peer broke the framing or sent an invalid message. */
  protocolErrors: number;
  /** Streams reset because an answer missed its deadline: the peer did not read. */
  slowReaderDrops: number;
}

export interface ChunkServer {
  stats(): ChunkServerStats;
  /** Stop accepting streams and reset the open ones. */
  close(): Promise<void>;
}

/** Serve chunks from `store` to any peer that can connect (i.e. any fleet member). */
export async function registerChunkServer(
  node: ServerNode,
  store: ChunkSource,
  opts: ChunkServerOptions,
): Promise<ChunkServer> {
  if (!Number.isInteger(opts.maxConcurrentUploads) || opts.maxConcurrentUploads < 1) {
    throw new RangeError(`maxConcurrentUploads must be a positive integer, got ${opts.maxConcurrentUploads}`);
  }
  const perPeerCap = Math.min(opts.maxConcurrentUploads, opts.maxUploadsPerPeer ?? DEFAULT_UPLOADS_PER_PEER);
  if (!Number.isInteger(perPeerCap) || perPeerCap < 1) {
    throw new RangeError(`maxUploadsPerPeer must be a positive integer, got ${opts.maxUploadsPerPeer}`);
  }
  const deadlineMs = opts.uploadDeadlineMs ?? DEFAULT_UPLOAD_DEADLINE_MS;
  const perPeer = new Map<string, PeerServeStats>();
  /** Uploads running per peer; an entry exists only while the count is above zero, so the map stays small. */
  const activeByPeer = new Map<string, number>();
  const open = new Set<Stream>();
  let activeUploads = 0;
  let slowReaderDrops = 0;
  let bytesServed = 0;
  let chunksServed = 0;
  let protocolErrors = 0;

  const peerStats = (peer: string): PeerServeStats => {
    let entry = perPeer.get(peer);
    if (entry === undefined) {
      entry = { bytes: 0, chunks: 0, misses: 0, busy: 0, dropped: 0 };
      perPeer.set(peer, entry);
    }
    return entry;
  };

  /** Answer one accepted request. Failures only mean the stream died; the reader loop sees that too. */
  const upload = async (writer: FrameWriter, peer: string, req: ChunkGet): Promise<void> => {
    let stored: StoredChunk | undefined;
    try {
      // Not held (no file), gone (GC) or failing its own verification: either way we do not hold a good copy,
      // and the honest answer is `miss`.
      stored = await store.getStored(req.id);
      if (stored.codec === 'zstd' && req.zstd !== true) {
        stored = store.get === undefined ? undefined : { codec: 'raw', data: await store.get(req.id), size: stored.size };
      }
    } catch {
      stored = undefined;
    }
    if (stored === undefined) {
      peerStats(peer).misses++;
      await writer.write({ t: 'miss', rid: req.rid, id: req.id });
      return;
    }
    const data = opts.faultHook === undefined ? stored.data : await opts.faultHook(req.id, stored.data);
    const tokens = opts.uploadLimit?.take(data.length);
    if (tokens) await tokens;
    await writer.write(
      { t: 'chunk', rid: req.rid, id: req.id, codec: stored.codec, size: stored.size, len: data.length },
      data,
    );
    const entry = peerStats(peer);
    entry.bytes += data.length;
    entry.chunks++;
    bytesServed += data.length;
    chunksServed++;
  };

  const serveStream = async (stream: Stream, peer: string): Promise<void> => {
    open.add(stream);
    const reader = new FrameReader(stream, {
      maxHeaderBytes: MAX_MESSAGE_HEADER_BYTES,
      maxPayloadBytes: 0,
      highWaterBytes: SERVER_READ_HIGH_WATER,
    });
    const writer = new FrameWriter(stream);
    const uploads = new Set<Promise<void>>();
    let dropped = false;
    /** The peer is not reading: reset the stream, which fails its queued writes and frees its slots. */
    const drop = (): void => {
      if (dropped) return;
      dropped = true;
      slowReaderDrops++;
      peerStats(peer).dropped++;
      stream.abort(new Error(`peer ${peer} did not read an answer within ${deadlineMs} ms`));
    };
    /** Run one write (or upload) under the deadline; the returned promise settles by the deadline at the latest. */
    const withDeadline = (work: Promise<void>): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          drop();
          resolve();
        }, deadlineMs);
      });
      return Promise.race([work.catch(() => undefined), expired]).finally(() => clearTimeout(timer));
    };
    try {
      for await (const frame of reader) {
        const req = parseChunkRequest(frame.header);
        const mine = activeByPeer.get(peer) ?? 0;
        if (activeUploads >= opts.maxConcurrentUploads || mine >= perPeerCap) {
          peerStats(peer).busy++;
          // Awaited, under the deadline: a peer that floods requests without reading stalls only its own stream,
          // and is dropped when the answer cannot leave in time.
          await withDeadline(writer.write({ t: 'busy', rid: req.rid }));
          if (dropped) break;
          continue;
        }
        activeUploads++;
        activeByPeer.set(peer, mine + 1);
        const task = withDeadline(upload(writer, peer, req)).finally(() => {
          activeUploads--;
          const left = (activeByPeer.get(peer) ?? 1) - 1;
          if (left > 0) activeByPeer.set(peer, left);
          else activeByPeer.delete(peer);
          uploads.delete(task);
        });
        uploads.add(task);
      }
      if (dropped) return;
      // The requester closed its side: finish what it asked for, then close ours.
      await Promise.all(uploads);
      await stream.close().catch(() => undefined);
    } catch (err) {
      // Garbage, an invalid message or a dead stream: reset this stream only; other peers are unaffected.
      if (err instanceof Error && (err.name === 'FrameProtocolError' || err.name === 'MessageError')) {
        protocolErrors++;
      }
      stream.abort(asError(err, 'chunk stream failed'));
    } finally {
      open.delete(stream);
    }
  };

  await node.handle(
    CHUNK_PROTOCOL,
    (stream: Stream, connection: Connection) => {
      void serveStream(stream, connection.remotePeer.toString());
    },
    { maxInboundStreams: MAX_INBOUND_STREAMS_PER_CONNECTION },
  );

  return {
    stats: () => ({
      activeUploads,
      bytesServed,
      chunksServed,
      perPeer: new Map([...perPeer].map(([peer, s]) => [peer, { ...s }])),
      protocolErrors,
      slowReaderDrops,
    }),
    close: async () => {
      await node.unhandle(CHUNK_PROTOCOL);
      for (const stream of open) stream.abort(new Error('chunk server stopped'));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Client errors

/** Base class: `fetch` failed for this chunk from this peer. */
export class ChunkFetchError extends Error {
  override name = 'ChunkFetchError';
  constructor(
    message: string,
    readonly peerId: string,
    readonly chunkId: string,
  ) {
    super(message);
  }
}

/** The peer does not hold the chunk. */
export class ChunkMissError extends ChunkFetchError {
  override name = 'ChunkMissError';
}

/** The peer is at its upload cap; try another holder. */
export class ChunkBusyError extends ChunkFetchError {
  override name = 'ChunkBusyError';
}

/** No answer within the request timeout; the stream was reset, as a stalled peer blocks everything behind it. */
export class ChunkTimeoutError extends ChunkFetchError {
  override name = 'ChunkTimeoutError';
}

/** The peer broke the protocol (bad frame, invalid message, an answer that does not match the request). */
export class ChunkProtocolError extends ChunkFetchError {
  override name = 'ChunkProtocolError';
}

/** The stream could not be opened or failed before the answer arrived. */
export class ChunkStreamError extends ChunkFetchError {
  override name = 'ChunkStreamError';
}

// ---------------------------------------------------------------------------------------------------------------
// Client

export interface ChunkClientOptions {
  /** Requests pipelined on the stream at once; further `fetch` calls wait for a slot. */
  maxInFlight: number;
  /** Per request, from sending it to the last payload byte. */
  timeoutMs?: number;
  /** The host-wide download cap: reading pauses while it has no tokens, so TCP slows the sender down. */
  downloadLimit?: RateLimiter;
}

export interface ChunkClientStats {
  /** Stored bytes received in good `chunk` answers. */
  bytesReceived: number;
  chunks: number;
  misses: number;
  busy: number;
  /** Fetches that failed for any other reason (timeout, protocol, stream). */
  errors: number;
  /**
   * Delivery rate in bytes/s: bytes received over the time the stream spent delivering them. Each chunk is
   * timed from when the pipe was free for it (its request was sent and the previous answer had arrived) to its
   * last byte, so pipelined chunks are not double counted. 0 until the first chunk.
   */
  throughputBps: number;
  inFlight: number;
}

interface Pending {
  id: string;
  sentAt: number;
  timer: NodeJS.Timeout;
  resolve: (chunk: StoredChunk) => void;
  reject: (err: ChunkFetchError) => void;
}

/** One open stream and the requests waiting for answers on it. */
interface Session {
  stream: Stream;
  writer: FrameWriter;
  pending: Map<number, Pending>;
  lastCompleteAt: number;
  dead: boolean;
}

/** Fetches chunks from one remote peer over a lazily opened, long-lived stream. */
export class ChunkClient {
  private readonly peer: string;
  private readonly maxInFlight: number;
  private readonly timeoutMs: number;
  private readonly downloadLimit: RateLimiter | undefined;
  private session: Session | undefined;
  private opening: Promise<Session> | undefined;
  private nextRid = 1;
  private inFlight = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private closed = false;
  private bytesReceived = 0;
  private chunks = 0;
  private misses = 0;
  private busy = 0;
  private errors = 0;
  private deliveryMs = 0;

  constructor(
    private readonly node: ClientNode,
    readonly peerId: PeerId,
    opts: ChunkClientOptions,
  ) {
    if (!Number.isInteger(opts.maxInFlight) || opts.maxInFlight < 1) {
      throw new RangeError(`maxInFlight must be a positive integer, got ${opts.maxInFlight}`);
    }
    this.peer = peerId.toString();
    this.maxInFlight = opts.maxInFlight;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.downloadLimit = opts.downloadLimit;
  }

  /** Fetch the stored bytes of one chunk. Rejects with a ChunkFetchError subclass. Bytes are NOT verified here. */
  async fetch(id: string): Promise<StoredChunk> {
    if (this.closed) throw new ChunkStreamError(`chunk client for peer ${this.peer} is closed`, this.peer, id);
    await this.acquireSlot();
    try {
      return await this.request(id);
    } catch (err) {
      if (err instanceof ChunkMissError) this.misses++;
      else if (err instanceof ChunkBusyError) this.busy++;
      else this.errors++;
      throw err;
    } finally {
      this.releaseSlot();
    }
  }

  stats(): ChunkClientStats {
    return {
      bytesReceived: this.bytesReceived,
      chunks: this.chunks,
      misses: this.misses,
      busy: this.busy,
      errors: this.errors,
      throughputBps: this.deliveryMs > 0 ? (this.bytesReceived * 1000) / this.deliveryMs : 0,
      inFlight: this.inFlight,
    };
  }

  /** Fail outstanding fetches and close the stream. */
  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.slotWaiters.splice(0)) wake();
    const session = this.session;
    this.session = undefined;
    if (session === undefined) return;
    if (session.pending.size > 0) {
      this.fail(session, (id) => new ChunkStreamError(`chunk client for peer ${this.peer} was closed`, this.peer, id));
      session.stream.abort(new Error('chunk client closed'));
    } else {
      session.dead = true;
      await session.stream.close().catch(() => undefined);
    }
  }

  private async acquireSlot(): Promise<void> {
    while (this.inFlight >= this.maxInFlight) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      if (this.closed) throw new ChunkStreamError(`chunk client for peer ${this.peer} is closed`, this.peer, '');
    }
    this.inFlight++;
  }

  private releaseSlot(): void {
    this.inFlight--;
    this.slotWaiters.shift()?.();
  }

  private async request(id: string): Promise<StoredChunk> {
    const session = await this.openSession(id);
    const rid = this.nextRid;
    this.nextRid = this.nextRid >= 0xffff_ffff ? 1 : this.nextRid + 1;
    const answer = new Promise<StoredChunk>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new ChunkTimeoutError(`peer ${this.peer} did not deliver chunk ${id} within ${this.timeoutMs} ms`, this.peer, id));
        session.pending.delete(rid);
        this.kill(session, 'a request timed out');
      }, this.timeoutMs);
      session.pending.set(rid, { id, sentAt: performance.now(), timer, resolve, reject });
    });
    session.writer.write(ZSTD_AVAILABLE ? { t: 'get', rid, id, zstd: true } : { t: 'get', rid, id }).catch((err: unknown) => {
      this.kill(session, `sending a request failed: ${asError(err, 'send failed').message}`);
    });
    return answer;
  }

  private openSession(id: string): Promise<Session> {
    if (this.session !== undefined && !this.session.dead) return Promise.resolve(this.session);
    if (this.opening === undefined) {
      this.opening = this.dial(id).finally(() => (this.opening = undefined));
    }
    return this.opening;
  }

  private async dial(id: string): Promise<Session> {
    let stream: Stream;
    try {
      stream = await this.node.dialProtocol(this.peerId, CHUNK_PROTOCOL, {
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const why = asError(err, 'dial failed').message;
      throw new ChunkStreamError(`cannot open a chunk stream to peer ${this.peer}: ${why}`, this.peer, id);
    }
    const session: Session = {
      stream,
      writer: new FrameWriter(stream),
      pending: new Map(),
      lastCompleteAt: 0,
      dead: false,
    };
    if (this.closed) {
      stream.abort(new Error('chunk client closed'));
      throw new ChunkStreamError(`chunk client for peer ${this.peer} is closed`, this.peer, id);
    }
    this.session = session;
    void this.readAnswers(session);
    return session;
  }

  private async readAnswers(session: Session): Promise<void> {
    const reader = new FrameReader(session.stream, {
      maxHeaderBytes: MAX_MESSAGE_HEADER_BYTES,
      maxPayloadBytes: MAX_STORED_CHUNK_SIZE,
      // One parsed answer waiting for the store is enough: more would only hold memory per peer.
      highWaterBytes: MAX_STORED_CHUNK_SIZE,
      throttle: this.downloadLimit && ((n) => this.downloadLimit!.take(n)),
    });
    let reason = 'the peer closed the stream';
    try {
      for await (const frame of reader) {
        let answer: ChunkResponseMessage;
        try {
          answer = parseChunkResponse(frame.header);
        } catch (err) {
          this.breach(session, `peer ${this.peer} sent an invalid answer: ${(err as Error).message}`);
          return;
        }
        const pending = session.pending.get(answer.rid);
        if (pending === undefined) {
          this.breach(session, `peer ${this.peer} answered request ${answer.rid}, which is not outstanding`);
          return;
        }
        if (answer.t !== 'busy' && answer.id !== pending.id) {
          this.breach(session, `peer ${this.peer} answered request ${answer.rid} for ${pending.id} with ${answer.id}`);
          return;
        }
        if (answer.t === 'chunk' && answer.len !== frame.payload.length) {
          this.breach(session, `peer ${this.peer} declared ${answer.len} bytes for ${pending.id} but sent ${frame.payload.length}`);
          return;
        }
        session.pending.delete(answer.rid);
        clearTimeout(pending.timer);
        if (answer.t === 'chunk') {
          const start = Math.max(pending.sentAt, session.lastCompleteAt);
          this.deliveryMs += Math.max(0, frame.completeAt - start);
          session.lastCompleteAt = frame.completeAt;
          this.bytesReceived += frame.payload.length;
          this.chunks++;
          pending.resolve({ codec: answer.codec, data: frame.payload, size: answer.size });
        } else if (answer.t === 'miss') {
          pending.reject(new ChunkMissError(`peer ${this.peer} does not have chunk ${pending.id}`, this.peer, pending.id));
        } else {
          pending.reject(new ChunkBusyError(`peer ${this.peer} is at its upload cap`, this.peer, pending.id));
        }
      }
    } catch (err) {
      reason = asError(err, 'stream failed').message;
      if (err instanceof Error && err.name === 'FrameProtocolError') {
        this.fail(session, (id) => new ChunkProtocolError(`peer ${this.peer} broke the framing: ${reason}`, this.peer, id));
      }
    }
    this.kill(session, reason);
  }

  /** The peer broke the protocol: fail everything on this stream as a protocol error and reset it. */
  private breach(session: Session, message: string): void {
    this.fail(session, (id) => new ChunkProtocolError(message, this.peer, id));
    session.stream.abort(new Error(message));
    this.kill(session, message);
  }

  /** Retire a session: reset its stream and fail whatever is still waiting on it. The next fetch re-opens. */
  private kill(session: Session, reason: string): void {
    this.fail(session, (id) => new ChunkStreamError(`chunk stream to peer ${this.peer} failed: ${reason}`, this.peer, id));
    if (!session.dead) {
      session.dead = true;
      session.stream.abort(new Error(`chunk stream retired: ${reason}`));
    }
    if (this.session === session) this.session = undefined;
  }

  private fail(session: Session, makeError: (id: string) => ChunkFetchError): void {
    for (const [rid, pending] of session.pending) {
      clearTimeout(pending.timer);
      session.pending.delete(rid);
      pending.reject(makeError(pending.id));
    }
  }
}

/**
 * Fetch a chunk from a peer and write it to the store. The store verifies the decoded bytes against the id:
 * a peer serving bad bytes makes this throw the store's CorruptChunkError (and nothing is written), so the
 * caller can drop and avoid that peer.
 */
export async function fetchAndStore(client: ChunkClient, store: ChunkSink, id: string): Promise<ChunkRef> {
  const chunk = await client.fetch(id);
  return store.putStored(id, chunk.codec, chunk.data, chunk.size);
}
