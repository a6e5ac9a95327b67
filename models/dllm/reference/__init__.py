"""Reference sampler of a masked diffusion language model (docs/design.md §4), in PyTorch + NumPy.

The TypeScript engine (src/engine/{rng,sampler,sequence}.ts) must reproduce it token for token; this module mirrors
it function for function and produces the golden vectors that test/engine/golden.test.ts checks. Semantics follow
LLaDA's generate() (Nie et al., "Large Language Diffusion Models", 2025; GitHub ML-GSAI/LLaDA generate.py): a canvas
of prompt + masks (+ an infill suffix), blocks decoded left to right, the linear commit schedule, Gumbel-max sampling
in float64, low_confidence / random remasking, classifier-free guidance; Dream's (HKUNLP/Dream) margin and entropy
confidences; Fast-dLLM's (NVlabs/Fast-dLLM) threshold and factor parallel decoding; end-of-text early stop. Dream's own
sampler (HKUNLP Dream `_sample`: timesteps, maskgit_plus / topk_margin / entropy / origin, Params.alg) for models with
shifted logits (architecture dream), mirrored here and written once more, independently, in reference/dream.py.

The model step is SamplingGraph from graph.py, i.e. exactly the computation of the exported ONNX graph.

Modules: sampler (the RNG, the per-position choice, the commit rules and one choice's canvas), batching (the batched
generation loop, ReferenceSampler, result), golden (the golden cases and golden()), weights (the model recovered from
model.onnx, load, sha256), dream (Dream's sampler as the official code reads, each sequence alone), __main__ (the
command line).

Regenerate the golden vectors after the model changes (one command, from models/):

    cd models && python3 -m dllm.reference --golden ../test/fixtures/golden/tiny-llada.json
    cd models && python3 -m dllm.reference --model tiny-bd3 --golden ../test/fixtures/golden/tiny-bd3.json
    cd models && python3 -m dllm.reference --model tiny-dream-random --golden ../test/fixtures/golden/tiny-dream-random.json
"""

from .batching import (ReferenceSampler, append_completed_blocks, build_batch, build_step_batch, cached_feeds, result,
                       step_rows)
from .dream import DreamResult, dream_generate, dream_generate_many, sample_tokens
from .golden import (BD3_BASE_CASES, DREAM_CASES, GOLDEN_CASES, NEAR_TIE, PROMPTS, dream_schedule_agrees, golden,
                     golden_cases)
from .sampler import (CACHE_MODES, DREAM_ALGS, REMASKING_RULES, CounterRng, Head, Params, Sequence, block_starts,
                      candidate_count, choose_token, confidence_score, dream_commits, dream_confidence, dream_count,
                      dream_share, dream_timesteps, generated_length, mix32, penalized_row, rank_by_score,
                      select_commits, selection_margin, transfer_schedule)
from .weights import load, model_from_onnx, model_sha256, sha256

__all__ = ["BD3_BASE_CASES", "CACHE_MODES", "DREAM_ALGS", "DREAM_CASES", "GOLDEN_CASES", "NEAR_TIE", "PROMPTS",
           "REMASKING_RULES", "CounterRng", "DreamResult", "Head", "Params", "ReferenceSampler", "Sequence",
           "append_completed_blocks", "block_starts", "build_batch", "build_step_batch", "cached_feeds",
           "candidate_count", "choose_token", "confidence_score", "dream_commits", "dream_confidence", "dream_count",
           "dream_generate", "dream_generate_many", "dream_schedule_agrees", "dream_share", "dream_timesteps",
           "generated_length", "golden", "golden_cases", "load", "mix32", "model_from_onnx", "model_sha256", "penalized_row",
           "rank_by_score", "result", "sample_tokens", "select_commits", "selection_margin", "sha256", "step_rows",
           "transfer_schedule"]
