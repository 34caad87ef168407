// Shared types of the joblet side: what a runtime is, and the limits applied to packages.
// Nothing here knows about the store or the network.

/** The fields of runtime.yml that the agent uses. Other fields are kept only in `raw`. */
export interface RuntimeMeta {
  name: string;
  version: string;
  language?: string;
  description?: string;
  /** Normalised to 'amd64' | 'arm64' spellings as written, lower-cased; absent = any machine. */
  architectures?: string[];
}

/** Guards against decompression bombs and absurd archives. */
export interface PackageLimits {
  /** Largest total of unpacked file bytes accepted. */
  maxUnpackedBytes: number;
  /** Largest number of entries accepted. */
  maxEntries: number;
}

export const DEFAULT_LIMITS: PackageLimits = {
  maxUnpackedBytes: 32 * 1024 ** 3,
  maxEntries: 2_000_000,
};

/** A bad package or bad archive entry: the message is one sentence an operator can act on. */
export class PackageError extends Error {
  override name = 'PackageError';
}
