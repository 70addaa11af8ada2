// The bench's human output: plain-text tables of a BenchResult (Markdown-compatible, so the
// tables in docs/performance.md are a paste).
import type { BenchResult } from "./run.ts";

function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((row) => row.map(String))];
  const widths = head.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  return [
    line(cells[0]!),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...cells.slice(1).map(line),
  ].join("\n");
}

export function formatReport(result: BenchResult): string {
  const { machine, settings } = result;
  const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
  return [
    `${machine.cpus} × ${machine.cpuModel}, ${mb(machine.memoryBytes)} MiB, ${machine.platform}; Node ${machine.node}, SQLite ${machine.sqlite}${machine.postgres ? `, PostgreSQL ${machine.postgres} on loopback` : ""}`,
    `load average ${machine.loadAverageBefore.join(" ")} before, ${machine.loadAverageAfter.join(" ")} after; ` +
      `${settings.rounds} rounds of ${settings.requestsPerRound === undefined ? `${settings.durationSeconds} s` : `${settings.requestsPerRound} requests`} per case after a warm-up, ` +
      `${settings.connections} connections${settings.quick ? " (--quick: tiny settings, figures mean nothing)" : ""}`,
    "",
    table(
      [
        "HTTP",
        "request",
        "req/s",
        "vs bare",
        "vs helmet+pino",
        "p50 ms",
        "p99 ms",
        "p99 vs bare",
        "CPU µs/req",
        "failures",
      ],
      result.http.map((r) => [
        r.name,
        r.request,
        Math.round(r.reqPerSec),
        r.vsBare,
        r.vsMiddleware,
        r.p50Ms,
        r.p99Ms,
        r.p99VsBare,
        r.cpuUsPerRequest,
        r.failures,
      ]),
    ),
    "",
    table(
      ["metrics (GET /api/notes/:id)", "value"],
      [
        ["req/s without metrics", Math.round(result.metrics.offReqPerSec)],
        ["req/s with metrics on", Math.round(result.metrics.onReqPerSec)],
        [
          `req/s with metrics on, /metrics scraped every ${result.metrics.scrapeIntervalMs} ms`,
          Math.round(result.metrics.scrapedReqPerSec),
        ],
        ["metrics on / off (req/s)", result.metrics.onOverOff],
        ["scraped / not scraped (req/s)", result.metrics.scrapedOverOn],
        [
          "server CPU µs per request: off, on, on and scraped",
          `${result.metrics.offCpuUs}, ${result.metrics.onCpuUs}, ${result.metrics.scrapedCpuUs}`,
        ],
        ["scrapes during the measured rounds", result.metrics.scrapes],
        ["scrape time under load, median of rounds' medians (ms)", result.metrics.scrapeMedianMs],
        ["scrape time under load, worst (ms)", result.metrics.scrapeMaxMs],
      ],
    ),
    "",
    table(
      ["in process", "Kysely ops/s", "raw ops/s", "Kysely µs", "raw µs", "time ratio"],
      result.inProcess.map((r) => [
        r.name,
        r.kyselyOpsPerSec,
        r.rawOpsPerSec,
        r.kyselyUs,
        r.rawUs,
        r.timeRatio,
      ]),
    ),
    "",
    table(
      [`backup of ${mb(result.fixtures.bigBytes)} MiB`, "ms", "vs copy", "reader's worst ms"],
      result.backup.map((r) => [r.name, Math.round(r.ms), r.vsCopy, r.readerWorstMs]),
    ),
    "",
    table(
      ["process", "value"],
      [
        ["cold start, as npm start: spawn to first 200 on /health (ms)", result.coldStart.firstHealthyMs],
        ["cold start, as npm start: spawn to listening (ms)", result.coldStart.listeningMs],
        ["cold start, as npm start: CPU used to the first 200 (ms)", result.coldStart.cpuMs],
        [
          "cold start, as the Docker image (warmed compile cache): first 200 (ms)",
          result.coldStart.warmCacheFirstHealthyMs,
        ],
        ["cold start, as the Docker image: CPU used to the first 200 (ms)", result.coldStart.warmCacheCpuMs],
        ["bare Express: spawn to first 200 (ms)", result.coldStart.bareFirst200Ms],
        ["bare Express: CPU used to the first 200 (ms)", result.coldStart.bareCpuMs],
        ["node -e 0 (ms)", result.coldStart.nodeAloneMs],
        ["RSS after the write load (MB)", result.memory.rssMb ?? "n/a"],
        ["  of which the process's own (heap, stacks)", result.memory.anonMb ?? "n/a"],
        ["  of which mapped files (node itself, libraries, the database)", result.memory.fileMb ?? "n/a"],
        ["bare Express: RSS after its load (MB)", result.memory.bareRssMb ?? "n/a"],
        ...(result.memory.postgresRssMb === undefined
          ? []
          : [["the service on PostgreSQL: RSS after its write load (MB)", result.memory.postgresRssMb]]),
      ],
    ),
    "",
    table(
      ["target", "goal", "value", "met"],
      result.targets.map((t) => [t.name, t.goal, t.value, t.met ? "yes" : "NO"]),
    ),
  ].join("\n");
}
