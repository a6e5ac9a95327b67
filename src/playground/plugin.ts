// The playground page at `/` (index.html, playground.js, playground.css): static files with no build step.
// tsc copies no assets, so they are read from the source tree both under tsx and from dist/: the package root is the
// nearest folder above this module that holds package.json (a deployment must ship src/playground/public).

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const PLAYGROUND_ASSETS = join(packageRoot(dirname(fileURLToPath(import.meta.url))), 'src', 'playground', 'public');

export default async function playgroundPlugin(app: FastifyInstance) {
  await app.register(fastifyStatic, {
    root: PLAYGROUND_ASSETS,
    prefix: '/',
    // One route per file found at start (and `/` for index.html), not a catch-all: unknown paths keep the API's 404.
    wildcard: false,
    // Other plugins (Swagger UI) register @fastify/static too; the reply decorator may exist only once.
    decorateReply: false,
  });
}
