// Golden vectors on the CPU provider (golden_suite.ts).

import { BD3_GOLDEN, BD3_MODEL_DIR, DREAM_GOLDEN, DREAM_MODEL_DIR, goldenSuite, LLADA_GOLDEN, MODEL_DIR } from './golden_suite.js';

goldenSuite(MODEL_DIR, LLADA_GOLDEN);
// The block diffusion model: the same engine, its exact block cache (prefix) and no cache give the same tokens.
goldenSuite(BD3_MODEL_DIR, BD3_GOLDEN);
// A Dream-architecture folder: Dream's sampler and shifted logits, in every cache mode.
goldenSuite(DREAM_MODEL_DIR, DREAM_GOLDEN);
