// The device graph's head (docs/models.md): WebGPU has no float64, so the graph returns the float32 sums that the
// normaliser and the entropy are made of, and they are finished here in float64 (models/dllm/graph.py device_head).

/**
 * Per (row, position) with m the best logit and d = l - m: logsumexp = m + log S and entropy = log S - W / S, where
 * S = topCount + sumExpRest (the terms equal to 1, counted exactly, plus the float32 sum of the others) and
 * W = sumExpShifted (the sum of exp(d) d).
 */
export function deviceHeadOutputs(
  topkLogits: Float32Array,
  k: number,
  topCount: Float32Array,
  sumExpRest: Float32Array,
  sumExpShifted: Float32Array,
): { logsumexp: Float64Array; entropy: Float64Array } {
  const n = topCount.length;
  const logsumexp = new Float64Array(n);
  const entropy = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = topCount[i] + sumExpRest[i];
    const logS = Math.log(s);
    logsumexp[i] = topkLogits[i * k] + logS;
    entropy[i] = logS - sumExpShifted[i] / s;
  }
  return { logsumexp, entropy };
}
