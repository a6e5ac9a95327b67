import type { FastifyInstance } from 'fastify';
import { modelRouteSchema, modelsRouteSchema } from '../schemas/models.js';
import { ApiError } from '../serving/errors.js';
import type { QuantizationSpec } from '../engine/model_folder.js';

const STARTED = Math.floor(Date.now() / 1000);

/** The folder's quantization in the API's snake_case (null: float weights). */
function quantization(q: QuantizationSpec | null) {
  return q === null ? null : { bits: q.bits, block_size: q.blockSize, accuracy_level: q.accuracyLevel, layers: q.layers };
}

export default async function modelsRoutes(app: FastifyInstance) {
  const card = () => ({
    id: app.servedName,
    object: 'model' as const,
    created: STARTED,
    owned_by: 'dllm-serve',
    max_model_len: app.model.maxSequenceLength,
    architecture: app.model.architecture,
    ...(app.model.blockSize !== null ? { block_size: app.model.blockSize } : {}),
    quantization: quantization(app.model.quantization),
  });
  app.get('/v1/models', { schema: modelsRouteSchema }, async () => ({ object: 'list' as const, data: [card()] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', { schema: modelRouteSchema }, async (req) => {
    if (req.params.model !== app.servedName) throw ApiError.modelNotFound(req.params.model);
    return card();
  });
}
