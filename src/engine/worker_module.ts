// Worker threads from modules of this package, compiled or run from TypeScript sources.

import { Worker } from 'node:worker_threads';

/**
 * A worker thread running the module `name` next to `from` (an import.meta.url). Compiled, that is name.js. From
 * TypeScript sources (tsx), the worker must register tsx itself first: Node 20 does not carry the main thread's
 * loader hooks into workers.
 */
export function startWorkerModule(from: string, name: string, workerData: unknown): Worker {
  if (!from.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, from), { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  const script = new URL(`./${name}.ts`, from).href;
  const bootstrap = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(script)}); })`;
  return new Worker(bootstrap, { eval: true, workerData });
}
