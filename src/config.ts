// Configuration from the environment, validated once at start (TypeBox) with clear errors.
// Every variable is documented in docs/configuration.md; test/api/config.test.ts keeps the two in step.

import { Type, type Static, type TSchema } from 'typebox';
import Value from 'typebox/value';

const Role = Type.Union([Type.Literal('all'), Type.Literal('api'), Type.Literal('worker')]);
const Provider = Type.Union([Type.Literal('cpu'), Type.Literal('cuda'), Type.Literal('webgpu'), Type.Literal('auto')]);
const Precision = Type.Union([Type.Literal('auto'), Type.Literal('fp32'), Type.Literal('fp16')]);
const KvCache = Type.Union([Type.Literal('auto'), Type.Literal('none'), Type.Literal('prefix'), Type.Literal('dual')]);
const LogLevel = Type.Union(
  ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
);

export const ConfigSchema = Type.Object({
  role: Role,
  host: Type.String({ minLength: 1 }),
  port: Type.Integer({ minimum: 0, maximum: 65535 }),
  modelDir: Type.String({ minLength: 1 }),
  /** Name served in /v1/models and accepted in `model`; null = the model folder's name. */
  modelName: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
  executionProvider: Provider,
  /** Which graph of the model folder to run; auto = fp16 on CUDA when the folder has one, else fp32. */
  precision: Precision,
  /** Default key/value cache mode of requests without `cache`; auto = dual on CPU, none on CUDA (docs/deploy.md). */
  kvCache: KvCache,
  /** Bound on the key/value cache bytes of admitted sequences (per engine); requests wait for it, or get 429 if they never fit. */
  kvCacheMaxBytes: Type.Integer({ minimum: 0 }),
  deviceId: Type.Integer({ minimum: 0 }),
  /** ONNX Runtime intra-op threads; 0 = the engine's default. */
  threads: Type.Integer({ minimum: 0 }),
  maxBatchSize: Type.Integer({ minimum: 1, maximum: 1024 }),
  /** Requests waiting for a batch slot before new ones get 429. */
  maxQueue: Type.Integer({ minimum: 0 }),
  redisUrl: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
  queueName: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$' }),
  apiKeys: Type.Array(Type.String({ minLength: 1 })),
  /** Requests per minute per API key (or per client address without keys); 0 = off. */
  rateLimitPerMinute: Type.Integer({ minimum: 0 }),
  /** Proxies whose X-Forwarded-For is believed (addresses, CIDRs or proxy-addr's names such as uniquelocal); empty = none. */
  trustProxy: Type.Array(Type.String({ minLength: 1 })),
  bodyLimitBytes: Type.Integer({ minimum: 1024 }),
  /** Time to receive a whole request (headers and body); 408 beyond. Responses (streams) are not limited by it. */
  httpRequestTimeoutMs: Type.Integer({ minimum: 100 }),
  /** Time to receive a request's headers; at most httpRequestTimeoutMs. */
  httpHeadersTimeoutMs: Type.Integer({ minimum: 100 }),
  /** How long an idle keep-alive connection stays open after a response. */
  httpKeepAliveTimeoutMs: Type.Integer({ minimum: 100 }),
  /** Open connections at most; further ones are closed at once. */
  httpMaxConnections: Type.Integer({ minimum: 1 }),
  /** A response (a stream or not) whose client takes nothing of it for this long is closed (nginx's send_timeout). */
  httpSendTimeoutMs: Type.Integer({ minimum: 100 }),
  /** Threads that tokenize (and render chat templates for) large prompts off the event loop. */
  tokenizerThreads: Type.Integer({ minimum: 1, maximum: 64 }),
  requestTimeoutMs: Type.Integer({ minimum: 100 }),
  keepAliveMs: Type.Integer({ minimum: 100 }),
  shutdownTimeoutMs: Type.Integer({ minimum: 0 }),
  /** Worker lock duration: a job whose worker stops renewing its lock is taken up again after about this long. */
  jobLockMs: Type.Integer({ minimum: 500 }),
  /** How often workers look for stalled jobs (of dead workers). */
  stalledIntervalMs: Type.Integer({ minimum: 500 }),
  eventStreamMaxLen: Type.Integer({ minimum: 100 }),
  eventTtlSeconds: Type.Integer({ minimum: 10 }),
  logLevel: LogLevel,
});

export type Config = Static<typeof ConfigSchema>;

interface VarSpec {
  key: keyof Config;
  kind: 'string' | 'int' | 'list' | 'nullable';
  def: string | null;
}

/** Environment variable → config field, kind and default. docs/configuration.md mirrors this. */
export const ENV: Record<string, VarSpec> = {
  ROLE: { key: 'role', kind: 'string', def: 'all' },
  HOST: { key: 'host', kind: 'string', def: '127.0.0.1' },
  PORT: { key: 'port', kind: 'int', def: '8000' },
  MODEL_DIR: { key: 'modelDir', kind: 'string', def: 'models/tiny-dream' },
  MODEL_NAME: { key: 'modelName', kind: 'nullable', def: null },
  EXECUTION_PROVIDER: { key: 'executionProvider', kind: 'string', def: 'cpu' },
  MODEL_PRECISION: { key: 'precision', kind: 'string', def: 'auto' },
  KV_CACHE: { key: 'kvCache', kind: 'string', def: 'auto' },
  KV_CACHE_MAX_BYTES: { key: 'kvCacheMaxBytes', kind: 'int', def: '2147483648' },
  DEVICE_ID: { key: 'deviceId', kind: 'int', def: '0' },
  ORT_THREADS: { key: 'threads', kind: 'int', def: '0' },
  MAX_BATCH_SIZE: { key: 'maxBatchSize', kind: 'int', def: '16' },
  MAX_QUEUE: { key: 'maxQueue', kind: 'int', def: '64' },
  REDIS_URL: { key: 'redisUrl', kind: 'nullable', def: null },
  QUEUE_NAME: { key: 'queueName', kind: 'string', def: 'dllm' },
  API_KEYS: { key: 'apiKeys', kind: 'list', def: '' },
  RATE_LIMIT_PER_MINUTE: { key: 'rateLimitPerMinute', kind: 'int', def: '0' },
  TRUST_PROXY: { key: 'trustProxy', kind: 'list', def: '' },
  BODY_LIMIT_BYTES: { key: 'bodyLimitBytes', kind: 'int', def: '1048576' },
  HTTP_REQUEST_TIMEOUT_MS: { key: 'httpRequestTimeoutMs', kind: 'int', def: '30000' },
  HTTP_HEADERS_TIMEOUT_MS: { key: 'httpHeadersTimeoutMs', kind: 'int', def: '10000' },
  HTTP_KEEPALIVE_TIMEOUT_MS: { key: 'httpKeepAliveTimeoutMs', kind: 'int', def: '5000' },
  HTTP_MAX_CONNECTIONS: { key: 'httpMaxConnections', kind: 'int', def: '1024' },
  HTTP_SEND_TIMEOUT_MS: { key: 'httpSendTimeoutMs', kind: 'int', def: '60000' },
  TOKENIZER_THREADS: { key: 'tokenizerThreads', kind: 'int', def: '1' },
  REQUEST_TIMEOUT_MS: { key: 'requestTimeoutMs', kind: 'int', def: '120000' },
  SSE_KEEPALIVE_MS: { key: 'keepAliveMs', kind: 'int', def: '15000' },
  SHUTDOWN_TIMEOUT_MS: { key: 'shutdownTimeoutMs', kind: 'int', def: '30000' },
  JOB_LOCK_MS: { key: 'jobLockMs', kind: 'int', def: '10000' },
  STALLED_INTERVAL_MS: { key: 'stalledIntervalMs', kind: 'int', def: '5000' },
  EVENT_STREAM_MAXLEN: { key: 'eventStreamMaxLen', kind: 'int', def: '10000' },
  EVENT_TTL_SECONDS: { key: 'eventTtlSeconds', kind: 'int', def: '600' },
  LOG_LEVEL: { key: 'logLevel', kind: 'string', def: 'info' },
};

/** What a field accepts, in words. */
function describe(schema: TSchema): string {
  const s = schema as { anyOf?: { const?: unknown; type?: string }[]; type?: string; minimum?: number; maximum?: number; pattern?: string };
  if (s.anyOf && s.anyOf.every((o) => o.const !== undefined)) return `must be one of ${s.anyOf.map((o) => o.const).join(', ')}`;
  if (s.type === 'integer') {
    const range = [s.minimum !== undefined ? `>= ${s.minimum}` : '', s.maximum !== undefined ? `<= ${s.maximum}` : ''].filter(Boolean).join(' and ');
    return `must be an integer${range ? ` ${range}` : ''}`;
  }
  if (s.pattern) return `must match ${s.pattern}`;
  return 'is invalid';
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Reads the configuration from `env` (process.env by default); throws ConfigError listing every problem. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  const varOf: Record<string, string> = {};
  for (const [name, spec] of Object.entries(ENV)) {
    varOf[spec.key] = name;
    const given = env[name];
    const text = given === undefined || given === '' ? spec.def : given.trim();
    switch (spec.kind) {
      case 'string':
        raw[spec.key] = text;
        break;
      case 'nullable':
        raw[spec.key] = text === null || text === '' ? null : text;
        break;
      case 'list':
        raw[spec.key] = (text ?? '')
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
        break;
      case 'int': {
        if (text !== null && /^-?\d+$/.test(text)) raw[spec.key] = Number(text);
        else {
          problems.push(`${name}=${JSON.stringify(given)}: must be an integer`);
          raw[spec.key] = Number(spec.def);
        }
        break;
      }
    }
  }
  Object.assign(raw, overrides);
  const props = ConfigSchema.properties as Record<string, TSchema>;
  for (const [field, schema] of Object.entries(props)) {
    if (Value.Check(schema, raw[field])) continue;
    const name = varOf[field] ?? field;
    if (problems.some((p) => p.startsWith(`${name}=`))) continue;
    problems.push(`${name}=${JSON.stringify(raw[field])}: ${describe(schema)}`);
  }
  const cfg = raw as Config;
  if (problems.length === 0 && cfg.role !== 'all' && cfg.redisUrl === null) {
    problems.push(`ROLE=${cfg.role} needs REDIS_URL (only ROLE=all runs without Redis)`);
  }
  if (problems.length === 0 && cfg.httpHeadersTimeoutMs > cfg.httpRequestTimeoutMs) {
    // Node refuses a headers timeout above the request timeout (http.createServer).
    problems.push(`HTTP_HEADERS_TIMEOUT_MS=${cfg.httpHeadersTimeoutMs}: must be at most HTTP_REQUEST_TIMEOUT_MS (${cfg.httpRequestTimeoutMs})`);
  }
  if (problems.length > 0) throw new ConfigError([...new Set(problems)]);
  return cfg;
}
