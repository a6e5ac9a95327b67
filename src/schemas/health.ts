import { Type } from 'typebox';
import { errorResponses } from './common.js';

export const healthRouteSchema = {
  summary: 'Liveness: the process is up',
  tags: ['operations'],
  security: [],
  response: { 200: Type.Object({ status: Type.Literal('ok') }) },
};

export const ReadyBody = Type.Object({
  ready: Type.Boolean(),
  model: Type.String(),
  role: Type.String(),
  transport: Type.String(),
  workers: Type.Integer({ description: 'Workers seen (1 in embedded mode)' }),
  waiting_requests: Type.Integer({ description: 'Requests admitted that have no sequence running yet (queued, or waiting for a batch slot)' }),
  running_requests: Type.Integer({ description: 'Requests with a sequence in a running batch' }),
  waiting_sequences: Type.Integer({ description: 'Sequences (one per choice) waiting for a batch slot, queued ones included' }),
  running_sequences: Type.Integer({ description: 'Sequences in the running batches' }),
  queued: Type.Integer({ description: 'The same figure as waiting_requests (kept for clients of earlier versions)' }),
  active_sequences: Type.Integer({ description: 'The same figure as running_sequences (kept for clients of earlier versions)' }),
  max_batch_size: Type.Integer(),
  providers: Type.Record(Type.String(), Type.Integer(), {
    description: 'Engines by execution provider and precision, e.g. {"cuda/fp16": 2}',
  }),
  reason: Type.Optional(Type.String()),
});

export const readyRouteSchema = {
  summary: 'Readiness: model loaded, Redis reachable, a worker present',
  tags: ['operations'],
  security: [],
  response: { 200: ReadyBody, 503: errorResponses[503] },
};

export const metricsRouteSchema = {
  summary: 'Prometheus metrics',
  tags: ['operations'],
  response: {
    200: { description: 'Prometheus text format', content: { 'text/plain': { schema: Type.String() } } },
    401: errorResponses[401],
    429: errorResponses[429],
  },
};
