// The service while its PostgreSQL server stops, restarts and comes back, on a cluster of the test's
// own: requests get 503 (never a 500, never a wait past the timeouts), /health says 503, and the
// service recovers by itself, every acknowledged write kept.
import { expect, it } from "vitest";
import { createDatabase, withSession } from "../src/db/postgres/session.ts";
import { formatDatabaseUrl, parseDatabaseUrl } from "../src/db/postgres/url.ts";
import { describePostgres } from "./engines.ts";
import { callService, cleanupAfterEach, type ServiceChild, startService } from "./helpers.ts";
import { clusterUnavailable, createCluster } from "./postgres-cluster.ts";

const { defer, tempDir, track } = cleanupAfterEach();

const unavailable = clusterUnavailable();
if (unavailable && process.env.TEST_DATABASE_URL) {
  console.log(`PostgreSQL restart tests skipped: ${unavailable}`);
}

// Bounds every request: a connection attempt (1 s), or a statement (2 s) plus pg's client-side
// margin (5 s) for a server that stops answering mid-query.
const CONNECT_TIMEOUT_MS = 1_000;
const STATEMENT_TIMEOUT_MS = 2_000;
const LONGEST_MS = CONNECT_TIMEOUT_MS + STATEMENT_TIMEOUT_MS + 5_000;

interface Outcome {
  status: number;
  ms: number;
  retryAfter: string | null;
  code?: string;
}

/** Workers writing and reading until stopped; every response recorded, every acknowledged id kept. */
function load(service: ServiceChild) {
  const outcomes: Outcome[] = [];
  const acked = new Map<number, string>();
  let running = true;
  let n = 0;
  const worker = async () => {
    while (running) {
      const title = `note ${n++}`;
      const started = performance.now();
      const res = await callService(service.port, "POST", "/api/notes", { title });
      outcomes.push({
        status: res.status,
        ms: performance.now() - started,
        retryAfter: res.headers.get("retry-after"),
        code: res.body?.error?.code,
      });
      if (res.status === 201) acked.set(res.body.id, title);
      const read = await callService(service.port, "GET", `/api/notes?limit=5`);
      outcomes.push({ status: read.status, ms: 0, retryAfter: read.headers.get("retry-after") });
      // A service answering 503 at once would spin: pause as a client honouring Retry-After would, briefly.
      if (res.status === 503) await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const workers = Promise.all(Array.from({ length: 4 }, worker));
  // A worker's failure (the service gone) surfaces in stop(), not as an unhandled rejection.
  workers.catch(() => {});
  return {
    outcomes,
    acked,
    async stop() {
      running = false;
      await workers;
    },
  };
}

async function waitForStatus(service: ServiceChild, url: string, status: number, withinMs: number) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const res = await callService(service.port, "GET", url);
    if (res.status === status) return res;
    if (Date.now() > deadline) throw new Error(`${url} still answers ${res.status} after ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describePostgres("PostgreSQL stopping and restarting under load", () => {
  it.skipIf(unavailable !== undefined)(
    "answers 503 while the server is away, /health too, and recovers by itself with every acknowledged write",
    async () => {
      const cluster = await createCluster(tempDir("svc-pg-cluster-"));
      defer(() => cluster.destroy());
      const admin = parseDatabaseUrl(cluster.url) as Exclude<ReturnType<typeof parseDatabaseUrl>, string>;
      const session = {
        statementTimeoutMs: 0,
        lockTimeoutMs: 0,
        idleInTransactionTimeoutMs: 0,
        applicationName: "tests",
      };
      await withSession({ url: admin, session, connectTimeoutMs: 5_000 }, (client) =>
        createDatabase(client, "app"),
      );
      const service = track(
        await startService({
          DATABASE_URL: formatDatabaseUrl(admin, { database: "app" }),
          DATABASE_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
          DATABASE_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
          BACKUP_DIR: tempDir(),
        }),
      );

      const traffic = load(service);
      while (traffic.acked.size < 50) await new Promise((resolve) => setTimeout(resolve, 20));

      // A restart in the middle of the load: sessions are cut, the server comes back.
      await cluster.restart();
      const afterRestart = traffic.acked.size;
      while (traffic.acked.size < afterRestart + 50) await new Promise((resolve) => setTimeout(resolve, 20));

      // Then the server away for a while: everything answers 503, quickly.
      await cluster.stop();
      const down = await waitForStatus(service, "/api/notes/1", 503, 10_000);
      expect(down.headers.get("retry-after")).toBe("5");
      expect(down.body.error.code).toBe("database_unavailable");
      const health = await callService(service.port, "GET", "/health");
      expect(health.status).toBe(503);
      expect(health.body).toEqual({ status: "error", reason: "database unavailable" });
      const whileDown = traffic.outcomes.length;
      while (traffic.outcomes.length < whileDown + 20)
        await new Promise((resolve) => setTimeout(resolve, 20));

      await cluster.start();
      await waitForStatus(service, "/health", 200, 15_000);
      const backUp = traffic.acked.size;
      while (traffic.acked.size < backUp + 50) await new Promise((resolve) => setTimeout(resolve, 20));
      await traffic.stop();

      const statuses = new Set(traffic.outcomes.map((o) => o.status));
      expect([...statuses].sort()).toEqual([200, 201, 503]);
      for (const o of traffic.outcomes.filter((x) => x.status === 503)) {
        expect(o.retryAfter).not.toBeNull();
      }
      expect(Math.max(...traffic.outcomes.map((o) => o.ms))).toBeLessThan(LONGEST_MS);

      // Every acknowledged write survived both the restart and the stop.
      for (const [id, title] of traffic.acked) {
        const res = await callService(service.port, "GET", `/api/notes/${id}`);
        expect(res.status, `note ${id}`).toBe(200);
        expect(res.body.title).toBe(title);
      }
      console.info(
        `restart: ${traffic.outcomes.length} requests, ${traffic.acked.size} writes acknowledged and kept, ${traffic.outcomes.filter((o) => o.status === 503).length} answered 503 while the server was away`,
      );
    },
    120_000,
  );
});
