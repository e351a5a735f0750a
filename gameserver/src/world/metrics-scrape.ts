/** The samples of a Prometheus text exposition: name, labels, value. */
export type MetricSamples = { name: string; labels: Record<string, string>; value: number }[];

/**
 * A shard's `/metrics` (at its ops URL), parsed: what the tools that run worlds on one machine
 * (the handoff benchmark, the soak) read the shards' gauges and counters from. Rejects on an HTTP
 * error or after `timeoutMs`.
 */
export async function scrapeMetrics(opsUrl: string, timeoutMs = 5000): Promise<MetricSamples> {
  const text = await fetch(`${opsUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => {
    if (!r.ok) throw new Error(`${opsUrl}/metrics: HTTP ${r.status}`);
    return r.text();
  });
  const out: MetricSamples = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `labels`. */
export function metricValue(m: MetricSamples, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of m) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}
