/**
 * The server's Prometheus metrics (prom-client, one registry per server): requests by route and
 * status, latency, the batcher's queue and batches, throughput, and model / runtime info. The
 * set passes `promtool check metrics` (test 36 runs it, and the same rules in JS).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Batcher, BatchInfo } from '../engine/batcher';

export interface ServerMetrics {
  registry: Registry;
  /** Records one answered request. */
  request(route: string, method: string, status: number, seconds: number): void;
}

export function createMetrics(batcher: Batcher, info: Record<string, string>): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  dropMislabelledDefaults(registry);
  const requests = new Counter({
    name: 'bge_m3_http_requests_total', help: 'HTTP requests answered, by route, method and status',
    labelNames: ['route', 'method', 'status'] as const, registers: [registry],
  });
  const latency = new Histogram({
    name: 'bge_m3_http_request_duration_seconds', help: 'Time from request to response, by route',
    labelNames: ['route'] as const, buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const batchTexts = new Histogram({
    name: 'bge_m3_batch_texts', help: 'Texts per model batch', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], registers: [registry],
  });
  const batchTokens = new Histogram({
    name: 'bge_m3_batch_tokens', help: 'Tokens per model batch', buckets: [16, 64, 256, 1024, 4096, 16384, 65536], registers: [registry],
  });
  const batchWait = new Histogram({
    name: 'bge_m3_batch_wait_seconds', help: 'Mean time the requests of a batch waited in the queue',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers: [registry],
  });
  const batchRun = new Histogram({
    name: 'bge_m3_batch_run_seconds', help: 'Model time per batch',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10], registers: [registry],
  });
  const batchFailures = new Counter({ name: 'bge_m3_batch_failures_total', help: 'Batches that failed or were cancelled', registers: [registry] });
  const tokens = new Counter({ name: 'bge_m3_encoded_tokens_total', help: 'Tokens encoded', registers: [registry] });
  batcher.on('batch', (b: BatchInfo) => {
    if (b.error) {
      batchFailures.inc();
      return;
    }
    batchTexts.observe(b.texts);
    batchTokens.observe(b.tokens);
    batchWait.observe(b.meanWaitMs / 1000);
    batchRun.observe(b.runMs / 1000);
    tokens.inc(b.tokens);
  });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
  gauge('bge_m3_queue_requests', 'Requests waiting for a batch', () => batcher.stats().queued);
  gauge('bge_m3_queue_tokens', 'Tokens waiting for a batch', () => batcher.stats().queuedTokens);
  gauge('bge_m3_batches_in_flight', 'Batches running in the model', () => batcher.stats().inFlight);
  gauge('bge_m3_tokens_per_second', 'Tokens encoded per second over the last 10 seconds', () => batcher.stats().tokensPerSecond);
  new Counter({
    name: 'bge_m3_rejected_total', help: 'Requests the batcher refused (queue full) or that ended early (aborted, timed out)',
    labelNames: ['reason'] as const, registers: [registry],
    collect() {
      const s = batcher.stats();
      this.reset();
      this.inc({ reason: 'queue_full' }, s.rejectedQueueFull);
      this.inc({ reason: 'aborted' }, s.aborted);
    },
  });
  const labels = Object.keys(info);
  new Gauge({ name: 'bge_m3_model_info', help: 'The loaded model and runtime (value 1)', labelNames: labels, registers: [registry] }).set(info, 1);
  return {
    registry,
    request(route, method, status, seconds) {
      requests.inc({ route, method, status: String(status) });
      latency.observe({ route }, seconds);
    },
  };
}

/**
 * Removes prom-client's default metrics that break Prometheus' naming rules (`promtool check
 * metrics`): gauges named like counters (`nodejs_active_handles_total`,
 * `nodejs_active_requests_total`, `nodejs_active_resources_total`). Nothing is lost: each is the
 * sum over `type` of the labelled gauge of the same name without `_total`, which stays.
 */
function dropMislabelledDefaults(registry: Registry): void {
  for (const metric of registry.getMetricsAsArray()) {
    const { name, type } = metric as unknown as { name: string; type: string };
    if (name.endsWith('_total') && String(type) !== 'counter') registry.removeSingleMetric(name);
  }
}
