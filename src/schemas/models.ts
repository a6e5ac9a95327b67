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
  quantization: Type.Optional(
    Type.Union(
      [
        Type.Object({
          bits: Type.Union([Type.Literal(4), Type.Literal(8)], { description: 'Bits per weight: 4 or 8' }),
          block_size: Type.Integer({ description: 'Weights per scale along the input features (16 to 256, a power of two)' }),
          accuracy_level: Type.Integer({
            minimum: 0,
            maximum: 4,
            description: "ONNX Runtime MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute (the CPU's int8 kernels where it has them)",
          }),
          layers: Type.Literal('linear', { description: "Which weights: every transformer block's linear layers; embeddings and the output head stay float" }),
        }),
        Type.Null(),
      ],
      {
        description:
          "Weight-only quantization of the model folder (dllm.json quantization): its linear layers run as ONNX Runtime's com.microsoft MatMulNBits with symmetric blockwise int4 or int8 weights; null for float weights",
      },
    ),
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
