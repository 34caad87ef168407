/**
 * Runtime polyfills needed by libp2p 3 on Node 20.
 *
 * libp2p 3 (and its muxers) call `Promise.withResolvers`, which Node only ships from v22. Without it every
 * connection upgrade throws and no peer can ever connect. Import this module for its side effect, before
 * any libp2p module is evaluated: `import './polyfill.js'` as the first import.
 */

interface Resolvers<T> {
  promise: Promise<T>;
  resolve: (value: T | PromiseLike<T>) => void;
  reject: (reason?: unknown) => void;
}

const promiseCtor = Promise as unknown as { withResolvers?: <T>() => Resolvers<T> };

if (typeof promiseCtor.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>(): Resolvers<T> {
      let resolve!: Resolvers<T>['resolve'];
      let reject!: Resolvers<T>['reject'];
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

export {};
