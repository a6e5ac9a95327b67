// Entry point. ROLE=all (default): API + engine in one process, with an in-process queue when REDIS_URL is unset
// (or through Redis when it is set). ROLE=api: HTTP only, jobs to Redis. ROLE=worker: engine + BullMQ worker.

import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import app, { openapiDocument } from './app.js';
import { logSerializers, serverOptions } from './server.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { openEngine, type DiffusionEngine } from './engine/engine.js';
import { loadModelFolder, type ModelFolder } from './engine/model_folder.js';
import { LocalTransport } from './transports/local.js';
import { RedisTransport } from './transports/redis.js';
import type { Transport } from './transports/transport.js';
import { QueueWorker } from './transports/worker.js';
import { servingModel } from './serving/model.js';

export interface Started {
  config: Config;
  /** The HTTP server (api, all). */
  server: FastifyInstance | null;
  /** The address it listens on. */
  url: string | null;
  engine: DiffusionEngine | null;
  transport: Transport | null;
  worker: QueueWorker | null;
  /** Graceful stop of every part, in order: HTTP (lets generations finish), worker, transport, engine. */
  stop(): Promise<void>;
}

/** Parts a caller may hand in instead of having them loaded (benchmarks, tools). */
export interface StartDeps {
  engine?: DiffusionEngine;
  folder?: ModelFolder;
}

export async function start(config: Config, log: Logger = pino({ level: config.logLevel }), deps: StartDeps = {}): Promise<Started> {
  const needsEngine = config.role !== 'api';
  const needsHttp = config.role !== 'worker';
  let engine: DiffusionEngine | null = null;
  let folder: ModelFolder;
  if (deps.folder) {
    folder = deps.folder;
    engine = deps.engine ?? null;
  } else if (needsEngine) {
    const opened = await openEngine({
      modelDir: config.modelDir,
      provider: config.executionProvider,
      precision: config.precision,
      cache: config.kvCache,
      maxCacheBytes: config.kvCacheMaxBytes,
      deviceId: config.deviceId,
      threads: config.threads === 0 ? undefined : config.threads,
      maxBatchSize: config.maxBatchSize,
      warn: (line) => log.warn(line),
    });
    engine = opened.engine;
    folder = opened.model;
    const health = await engine.health();
    log.info({ provider: health.provider, precision: health.precision, cache: health.kvCache?.defaultMode ?? 'none', deviceId: config.deviceId, modelFile: opened.modelPath }, 'engine ready');
  } else {
    folder = await loadModelFolder(config.modelDir);
  }
  const model = servingModel(folder);

  let worker: QueueWorker | null = null;
  if (engine && config.redisUrl) {
    worker = new QueueWorker(engine, {
      redisUrl: config.redisUrl,
      queueName: config.queueName,
      maxBatchSize: config.maxBatchSize,
      lockMs: config.jobLockMs,
      stalledIntervalMs: config.stalledIntervalMs,
      eventStreamMaxLen: config.eventStreamMaxLen,
      eventTtlSeconds: config.eventTtlSeconds,
      log: log.child({ role: 'worker' }),
    });
    await worker.start();
  }

  let transport: Transport | null = null;
  let server: FastifyInstance | null = null;
  let url: string | null = null;
  if (needsHttp) {
    transport = config.redisUrl
      ? new RedisTransport({
          redisUrl: config.redisUrl,
          queueName: config.queueName,
          maxQueue: config.maxQueue,
          modelName: model.name,
          workerGoneGraceMs: config.jobLockMs + config.stalledIntervalMs,
        })
      : new LocalTransport(engine!, config.maxBatchSize, config.maxQueue);
    const { logger: _unused, ...opts } = serverOptions(config);
    const http = Fastify({ ...opts, loggerInstance: log.child({ role: 'api' }, { serializers: logSerializers }) as FastifyBaseLogger });
    server = http as unknown as FastifyInstance;
    // Beyond this many open connections Node closes new ones at once (docs/security.md: slow clients cannot exhaust sockets).
    http.server.maxConnections = config.httpMaxConnections;
    await http.register(app, { config, model, transport });
    url = await http.listen({ host: config.host, port: config.port });
    log.info({ url, model: model.name, role: config.role, transport: transport.kind }, 'listening');
  }

  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      if (server) await server.close();
      if (transport) await transport.close();
      if (worker) await worker.close();
      // close() cancels what is left and waits for the step in flight before the session goes.
      if (engine) await engine.close();
    })());
  return { config, server, url, engine, transport, worker, stop };
}

async function main(): Promise<void> {
  if (process.argv[2] === 'openapi') {
    // `main openapi`: print the OpenAPI document (committed as openapi/openapi.json).
    const config = loadConfig();
    const doc = await openapiDocument(config, servingModel(await loadModelFolder(config.modelDir)));
    process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
    return;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`dllm-serve: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const log = pino({ level: config.logLevel });
  let started: Started;
  try {
    started = await start(config, log);
  } catch (err) {
    log.fatal({ err }, `start failed: ${(err as Error).message}`);
    process.stderr.write(`dllm-serve: start failed: ${(err as Error).message}\n`);
    process.exit(1);
  }
  let signals = 0;
  const shutdown = (signal: string) => {
    signals++;
    if (signals > 1) process.exit(1);
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 10_000);
    force.unref();
    started.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
