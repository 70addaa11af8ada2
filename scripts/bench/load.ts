// The load generator, in a process of its own so it never shares the server's event loop: runs
// autocannon for each job the bench sends over IPC and answers with the figures it needs.
import autocannon from "autocannon";

export interface LoadJob {
  url: string;
  method: "GET" | "POST";
  path: string;
  /** Replace ":id" in the path with a random id from 1 to this, per request. */
  randomIdMax?: number;
  body?: string;
  connections: number;
  durationSeconds: number;
  /** A fixed number of requests instead of a duration (autocannon checks its clock once a second). */
  amount?: number;
}

export interface LoadResult {
  requests: number;
  seconds: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Responses outside 2xx, connection errors and timeouts: a healthy run has none. */
  failures: number;
}

async function run(job: LoadJob): Promise<LoadResult> {
  const max = job.randomIdMax;
  const result = await autocannon({
    url: job.url,
    connections: job.connections,
    duration: job.durationSeconds,
    ...(job.amount === undefined ? {} : { amount: job.amount }),
    // autocannon ends a run (and stops its clock) on one of these ticks: at its default of a
    // second, a run of N requests would count up to a second of idling.
    sampleInt: 100,
    requests: [
      {
        method: job.method,
        path: job.path,
        ...(job.body === undefined
          ? {}
          : { body: job.body, headers: { "content-type": "application/json" } }),
        ...(max === undefined
          ? {}
          : {
              setupRequest: (request) => ({
                ...request,
                path: job.path.replace(":id", String(1 + Math.floor(Math.random() * max))),
              }),
            }),
      },
    ],
  });
  const requests = result.requests.total;
  return {
    requests,
    seconds: result.duration,
    reqPerSec: requests / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    maxMs: result.latency.max,
    failures: result.non2xx + result.errors + result.timeouts,
  };
}

process.on("message", (message: { id: number; job: LoadJob }) => {
  run(message.job).then(
    (result) => process.send!({ id: message.id, result }),
    (error: unknown) => process.send!({ id: message.id, error: String(error) }),
  );
});
process.on("disconnect", () => process.exit(0));
