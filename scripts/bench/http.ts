// The HTTP cases: each server in a process of its own, autocannon in another, the cases
// interleaved round by round so that a noisy neighbour slows them all alike.
import type { LoadJob, LoadResult } from "./load.ts";
import type { Loader, ServerProcess } from "./processes.ts";
import { median, round } from "./stats.ts";

export interface HttpCase {
  name: string;
  server: ServerProcess;
  job: Omit<LoadJob, "url" | "connections" | "durationSeconds">;
  /** Called after each round of this case (the write load reads the server's RSS here). */
  afterRound?: () => void;
  /** Runs beside each round of this case, warm-up included (the scrapes of /metrics). */
  beside?: () => { stop(): Promise<unknown> };
}

export interface HttpRow {
  name: string;
  request: string;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** The server's CPU time per request (µs, median of rounds); anything beside the load counts. */
  cpuUsPerRequest: number;
  failures: number;
  rounds: { reqPerSec: number; p50Ms: number; p99Ms: number; cpuUsPerRequest: number }[];
}

export interface HttpSettings {
  rounds: number;
  warmupSeconds: number;
  durationSeconds: number;
  /** When set, each round is this many requests rather than `durationSeconds` (for --quick). */
  requestsPerRound: number | undefined;
  connections: number;
}

export async function runHttpCases(
  loader: Loader,
  cases: HttpCase[],
  settings: HttpSettings,
  progress: (message: string) => void,
): Promise<HttpRow[]> {
  const job = (c: HttpCase, durationSeconds: number): LoadJob => ({
    ...c.job,
    url: `http://127.0.0.1:${c.server.port}`,
    connections: settings.connections,
    durationSeconds,
    ...(settings.requestsPerRound === undefined ? {} : { amount: settings.requestsPerRound }),
  });
  const run = async (c: HttpCase, seconds: number) => {
    const cpuBefore = c.server.cpuMs();
    const beside = c.beside?.();
    try {
      const result = await loader.run(job(c, seconds));
      const cpuAfter = c.server.cpuMs();
      const cpuUsPerRequest =
        cpuBefore === undefined || cpuAfter === undefined
          ? Number.NaN
          : ((cpuAfter - cpuBefore) * 1000) / result.requests;
      return { ...result, cpuUsPerRequest };
    } finally {
      await beside?.stop();
    }
  };
  for (const c of cases) {
    progress(`warm-up ${c.name}`);
    await run(c, settings.warmupSeconds);
  }
  const results = new Map<string, (LoadResult & { cpuUsPerRequest: number })[]>(
    cases.map((c) => [c.name, []]),
  );
  for (let round = 1; round <= settings.rounds; round++) {
    for (const c of cases) {
      progress(`round ${round}/${settings.rounds} ${c.name}`);
      results.get(c.name)!.push(await run(c, settings.durationSeconds));
      c.afterRound?.();
    }
  }
  return cases.map((c) => {
    const runs = results.get(c.name)!;
    return {
      name: c.name,
      request: `${c.job.method} ${c.job.path}`,
      reqPerSec: round(median(runs.map((r) => r.reqPerSec))),
      p50Ms: round(median(runs.map((r) => r.p50Ms))),
      p99Ms: round(median(runs.map((r) => r.p99Ms))),
      cpuUsPerRequest: round(median(runs.map((r) => r.cpuUsPerRequest))),
      failures: runs.reduce((sum, r) => sum + r.failures, 0),
      rounds: runs.map((r) => ({
        reqPerSec: round(r.reqPerSec),
        p50Ms: r.p50Ms,
        p99Ms: r.p99Ms,
        cpuUsPerRequest: round(r.cpuUsPerRequest),
      })),
    };
  });
}
