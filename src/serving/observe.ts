// Hooks the serving layer calls so that metrics can be kept without the serving code knowing prom-client
// (src/plugins/metrics.ts implements them).

export interface ServingObserver {
  step(endpoint: string): void;
  firstStep(endpoint: string, seconds: number): void;
  finished(endpoint: string, outcome: string, seconds: number, completionTokens: number): void;
}
