// Golden vectors on the WebGPU provider, the caches kept on the device by the device graph (golden_suite.ts). On a
// machine without a GPU this runs on Mesa's lavapipe (scripts/test.sh installs it): slowly, but the same graph and
// the same cache rules as on a GPU. Kept to a few minutes there: per model and cache mode, the first two cases alone
// and the first eight batched.

import { BD3_GOLDEN, BD3_MODEL_DIR, DREAM_GOLDEN, DREAM_MODEL_DIR, goldenSuite, LLADA_GOLDEN, MODEL_DIR } from './golden_suite.js';

goldenSuite(MODEL_DIR, LLADA_GOLDEN, 'webgpu', { alonePerMode: 2, batchedPerMode: 8 });
goldenSuite(BD3_MODEL_DIR, BD3_GOLDEN, 'webgpu', { alonePerMode: 2, batchedPerMode: 8 });
goldenSuite(DREAM_MODEL_DIR, DREAM_GOLDEN, 'webgpu', { alonePerMode: 2, batchedPerMode: 8 });
