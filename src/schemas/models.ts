import { Type } from 'typebox';
import { errorResponses } from './common.js';

export const ModelObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
  max_model_len: Type.Optional(Type.Integer()),
  architecture: Type.Optional(
    Type.Union([Type.Literal('llada'), Type.Literal('block_diffusion'), Type.Literal('dream')], {
      description:
        "The model's family (dllm.json): llada (bidirectional), block_diffusion (its own blocks; see block_size), dream (bidirectional with shifted logits; Dream's sampler, alg, by default)",
    }),
  ),
  block_size: Type.Optional(
    Type.Integer({ description: "A block diffusion model's block size: its only block_length (absent for LLaDA models)" }),
  ),
});

export const ModelList = Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelObject) });

export const modelsRouteSchema = {
  summary: 'List the served models',
  tags: ['models'],
  response: { 200: ModelList, 401: errorResponses[401], 429: errorResponses[429] },
};

export const modelRouteSchema = {
  summary: 'Retrieve a model',
  tags: ['models'],
  params: Type.Object({ model: Type.String() }),
  response: { 200: ModelObject, 401: errorResponses[401], 404: errorResponses[404], 429: errorResponses[429] },
};
