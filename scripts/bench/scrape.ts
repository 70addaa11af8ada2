// A Prometheus stand-in for the bench: GET /metrics with the token, again and again, while a load
// runs, so the read-note case can be measured with and without scrapes in the same run.
import { median, round } from "./stats.ts";

export interface Scraper {
  /** Stops after the scrape in progress; the scrapes' count and times so far. */
  stop(): Promise<{ scrapes: number; medianMs: number; maxMs: number }>;
}

export function startScraper({
  port,
  token,
  intervalMs,
}: {
  port: number;
  token: string;
  intervalMs: number;
}): Scraper {
  const times: number[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const started = performance.now();
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const body = await res.text();
      if (res.status !== 200 || !body.includes("http_request_duration_seconds")) {
        throw new Error(`scrape answered ${res.status}`);
      }
      times.push(performance.now() - started);
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  // A failed scrape surfaces from stop(), with the round it spoiled, not as an unhandled rejection.
  loop.catch(() => {});
  return {
    async stop() {
      stopped = true;
      await loop;
      return { scrapes: times.length, medianMs: round(median(times)), maxMs: round(Math.max(0, ...times)) };
    },
  };
}
