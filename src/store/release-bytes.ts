// Giving a buffer's memory back at once instead of at V8's next full GC.
//
// A receiver decodes every chunk into a fresh buffer (~1 MiB), writes it into the tree and drops it. Buffers are
// memory outside V8's heap, which V8 frees only when a mark-compact finds them dead, and it starts one only
// after ~64 MB more of such memory: so a receiver's ArrayBuffers peaked at 110 – 160 MB, mostly dead, and its full
// GCs ran every ~350 ms (docs/benchmarks.md). Detaching the ArrayBuffer (`transfer(0)`, ES2024; Node 22 and later)
// frees its memory now. Measured on one receiver: full GCs 7 -> 3 (21,697-entry tree) and 10 -> 7 (JDK), peak
// ArrayBuffers 146 -> 82 MB, 15 - 20 % fewer page faults.
//
// Only for a buffer its caller owns alone: a detached buffer reads as empty everywhere, so one still shared
// would lose its bytes, and one still being written to a file by the thread pool would be freed under it.

type Transferable = ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };

/** Frees the memory behind `bytes` now, where this Node can; `bytes` (and every view of it) is empty after. */
export function releaseBytes(bytes: Uint8Array): void {
  const buffer = bytes.buffer as Transferable;
  if (typeof buffer.transfer !== 'function') return;
  // Never a slice of Node's shared pool of small buffers (each under half of Buffer.poolSize, 8 KiB unless a
  // library changed it), which holds other buffers' bytes too, nor a view of part of a larger buffer. The slack is
  // for decoders' outputs, which have a byte of room past the chunk (chunk-store.ts).
  if (bytes.length < Math.max(8192, Buffer.poolSize) || bytes.byteOffset !== 0 || buffer.byteLength > bytes.length + 1024) return;
  try {
    buffer.transfer(0);
  } catch {
    // Already detached, or not detachable: nothing to give back.
  }
}
