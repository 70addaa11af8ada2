// GET /metrics: who may scrape, route templates rather than URLs, database and backup state read
// at scrape time, events counted through the recorder, and one registry per app.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app.ts";
import { startBackupSchedule } from "../src/backups/schedule.ts";
import { takeBackup } from "../src/db/sqlite/snapshot.ts";
import { createMetrics } from "../src/metrics/prometheus.ts";
import { listen } from "../src/server.ts";
import { captureLogger, cleanupAfterEach, createTestApp, inFlightPost, migrationsWith } from "./helpers.ts";
import {
  ADMIN_TOKEN,
  bearer,
  createMetricsTestApp,
  METRICS_TOKEN,
  type MetricsTestApp,
} from "./ops-helpers.ts";

const { defer } = cleanupAfterEach();

async function metricsApp(env: Record<string, string> = {}): Promise<MetricsTestApp> {
  const t = await createMetricsTestApp(env);
  defer(() => t.close());
  return t;
}

/** The samples of a scrape: `name{labels}` → value. */
function samples(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    map.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return map;
}

async function scrape(app: MetricsTestApp["app"]): Promise<Map<string, number>> {
  const res = await request(app).get("/metrics").set(bearer(METRICS_TOKEN)).expect(200);
  return samples(res.text);
}

describe("GET /metrics", () => {
  it("answers the metrics or admin token in Prometheus' text format, and 401 to anyone else", async () => {
    const t = await metricsApp();
    const res = await request(t.app).get("/metrics").set(bearer(METRICS_TOKEN)).expect(200);
    expect(res.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.text).toContain("# TYPE http_request_duration_seconds histogram");
    await request(t.app).get("/metrics").set(bearer(ADMIN_TOKEN)).expect(200);
    const refused = await request(t.app).get("/metrics").expect(401);
    expect(refused.headers["www-authenticate"]).toBe("Bearer");
  });

  it("is in /openapi.json when the app serves it: bearer, text/plain, 401", async () => {
    const t = await metricsApp();
    const document = (await request(t.app).get("/openapi.json").expect(200)).body;
    const operation = document.paths["/metrics"].get;
    expect(operation).toMatchObject({ operationId: "getMetrics", security: [{ bearerAuth: [] }] });
    expect(Object.keys(operation.responses).sort()).toEqual(["200", "401", "default"]);
    expect(Object.keys(operation.responses["200"].content)).toEqual(["text/plain"]);
  });

  it("is absent (404, as an unknown route) when neither token is set", async () => {
    const t = await createTestApp();
    defer(() => t.close());
    const res = await request(t.app).get("/metrics").set(bearer(METRICS_TOKEN)).expect(404);
    expect(res.body.error).toMatchObject({ code: "not_found", message: "no route for GET /metrics" });
    await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(404);
    const document = (await request(t.app).get("/openapi.json").expect(200)).body;
    expect(document.paths["/metrics"]).toBeUndefined();
  });

  it("labels requests with the route template, never the URL: errors and 404s included", async () => {
    const t = await metricsApp();
    const { body: note } = await request(t.app).post("/api/notes").send({ title: "x" }).expect(201);
    await request(t.app).get(`/api/notes/${note.id}`).expect(200);
    await request(t.app).get("/api/notes/987654").expect(404);
    await request(t.app).get("/api/notes/not-a-number").expect(400);
    await request(t.app).get("/no/such/page").expect(404);
    await request(t.app).head("/health").expect(200);
    const res = await request(t.app).get("/metrics").set(bearer(METRICS_TOKEN)).expect(200);
    const counts = [...samples(res.text)]
      .filter(([key]) => key.startsWith("http_request_duration_seconds_count"))
      .map(([key, value]) => `${key.slice(key.indexOf("{"))} ${value}`)
      .sort();
    expect(counts).toEqual([
      '{method="GET",route="/api/notes/:id",status_code="200"} 1',
      '{method="GET",route="/api/notes/:id",status_code="400"} 1',
      '{method="GET",route="/api/notes/:id",status_code="404"} 1',
      '{method="GET",route="unmatched",status_code="404"} 1',
      '{method="HEAD",route="/health",status_code="200"} 1',
      '{method="POST",route="/api/notes",status_code="201"} 1',
    ]);
    for (const raw of [`/api/notes/${note.id}"`, "987654", "not-a-number", "/no/such"]) {
      expect(res.text).not.toContain(raw);
    }
  });

  it("counts the requests in flight", async () => {
    const t = await metricsApp();
    const running = await listen(t.app, { port: 0, host: "127.0.0.1" });
    defer(() => running.stop(0));
    const url = `http://127.0.0.1:${running.port}/metrics`;
    const inFlight = async () =>
      samples(await (await fetch(url, { headers: bearer(METRICS_TOKEN) })).text()).get(
        "http_requests_in_flight",
      );
    // The scrape itself is in flight while it is collected.
    expect(await inFlight()).toBe(1);
    const post = inFlightPost(running.port);
    await post.accepted;
    expect(await inFlight()).toBe(2);
    post.finish();
    expect((await post.response).status).toBe(201);
    expect(await inFlight()).toBe(1);
  });

  it("reads the database at scrape time: size, WAL, free bytes, pending migrations, up", async () => {
    const t = await metricsApp();
    await request(t.app)
      .post("/api/notes")
      .send({ title: "x", body: "y".repeat(5000) })
      .expect(201);
    let m = await scrape(t.app);
    expect(m.get("app_database_up")).toBe(1);
    expect(m.get("app_database_size_bytes")).toBe(fs.statSync(t.config.databasePath).size);
    expect(m.get("app_database_wal_size_bytes")).toBe(fs.statSync(`${t.config.databasePath}-wal`).size);
    expect(m.get("app_database_wal_size_bytes")).toBeGreaterThan(0);
    expect(m.get("app_database_available_bytes")).toBeGreaterThan(1024 * 1024);
    expect(m.get("app_database_migrations_pending")).toBe(0);

    t.storage.sqlite.pragma("wal_checkpoint(TRUNCATE)");
    const pageCount = Number(t.storage.sqlite.pragma("page_count", { simple: true }));
    t.storage.sqlite.pragma(`max_page_count = ${pageCount}`);
    m = await scrape(t.app);
    expect(m.get("app_database_wal_size_bytes")).toBe(0);
    expect(m.get("app_database_available_bytes")).toBeLessThan(1024 * 1024);

    const migrationsDir = migrationsWith(t.dir, {
      "0002_later.ts": "export async function up() {}\nexport async function down() {}\n",
    });
    const { createServiceMetrics } = await import("../src/metrics/service-metrics.ts");
    const pending = createServiceMetrics({
      storage: t.storage,
      config: { ...t.config, migrationsDir },
      processMetrics: false,
    });
    expect(samples((await pending.scrape()).body).get("app_database_migrations_pending")).toBe(1);

    t.storage.sqlite.close();
    m = await scrape(t.app);
    expect(m.get("app_database_up")).toBe(0);
    expect(m.get("app_database_size_bytes")).toBeNaN();
    expect(m.get("app_database_available_bytes")).toBeNaN();
  });

  it("reads the database once per scrape, however many gauges it feeds", async () => {
    let reads = 0;
    const metrics = createMetrics({
      version: "1",
      engine: "sqlite",
      processMetrics: false,
      backupIntervalSeconds: null,
      readBackups: () => [],
      readDatabaseStats: async () => {
        reads++;
        return { sizeBytes: 1, walSizeBytes: 2, availableBytes: 3, migrationsPending: 0 };
      },
    });
    await metrics.scrape();
    expect(reads).toBe(1);
    await Promise.all([metrics.scrape(), metrics.scrape()]);
    expect(reads).toBeLessThanOrEqual(3);
    expect(reads).toBeGreaterThan(1);
  });

  it("counts statement errors by kind from the error handler", async () => {
    const t = await metricsApp({ BUSY_TIMEOUT_MS: "10" });
    t.storage.sqlite.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON notes WHEN NEW.title = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    );
    await request(t.app).post("/api/notes").send({ title: "refused" }).expect(409);
    const other = new BetterSqlite3(t.config.databasePath);
    defer(() => other.close());
    other.exec("BEGIN IMMEDIATE");
    await request(t.app).post("/api/notes").send({ title: "locked out" }).expect(503);
    other.exec("ROLLBACK");
    const pageCount = Number(t.storage.sqlite.pragma("page_count", { simple: true }));
    t.storage.sqlite.pragma(`max_page_count = ${pageCount}`);
    let status = 201;
    for (let i = 0; i < 50 && status === 201; i++) {
      status = (
        await request(t.app)
          .post("/api/notes")
          .send({ title: `n${i}`, body: "z".repeat(9000) })
      ).status;
    }
    expect(status).toBe(507);
    t.storage.sqlite.pragma("max_page_count = 1000000");
    const m = await scrape(t.app);
    expect(m.get('app_database_statement_errors_total{kind="constraint"}')).toBe(1);
    expect(m.get('app_database_statement_errors_total{kind="busy"}')).toBe(1);
    expect(m.get('app_database_statement_errors_total{kind="full"}')).toBe(1);
    expect(m.get('app_database_statement_errors_total{kind="corrupt"}')).toBe(0);
  });

  it("reports scheduled backups through the schedule's hook, and the newest backup of each kind on disk", async () => {
    const t = await metricsApp({ BACKUP_INTERVAL: "1s" });
    const manual = takeBackup({
      databasePath: t.config.databasePath,
      backupDir: t.config.backupDir,
      kind: "manual",
    });
    const { logger, lines } = captureLogger();
    const taken = new Promise<void>((resolve) => {
      const schedule = startBackupSchedule({
        engine: t.storage.engine,
        config: { ...t.config, backupIntervalMs: 20 },
        logger,
        hooks: {
          backupFinished(event) {
            t.metrics.recorder.backupFinished(event);
            resolve();
          },
        },
      });
      defer(() => schedule.stop());
    });
    await taken;
    expect(lines.map((l) => l.msg)).toContain("scheduled backup taken");
    const m = await scrape(t.app);
    expect(m.get('app_backups_total{kind="scheduled",outcome="success"}')).toBe(1);
    expect(m.get('app_backups_total{kind="scheduled",outcome="failure"}')).toBe(0);
    expect(m.get('app_backup_last_duration_seconds{kind="scheduled"}')).toBeGreaterThan(0);
    expect(m.get('app_backup_last_success_timestamp_seconds{kind="manual"}')).toBe(
      manual.createdAt.getTime() / 1000,
    );
    expect(m.get('app_backup_last_size_bytes{kind="manual"}')).toBe(manual.sizeBytes);
    expect(m.get('app_backup_last_success_timestamp_seconds{kind="scheduled"}')).toBeGreaterThanOrEqual(
      manual.createdAt.getTime() / 1000,
    );
    expect(m.get("app_backup_interval_seconds")).toBe(1);
  });

  it("counts a failed scheduled backup", async () => {
    const t = await metricsApp();
    const blocked = path.join(t.dir, "not-a-folder");
    fs.writeFileSync(blocked, "");
    const failed = new Promise<void>((resolve) => {
      const schedule = startBackupSchedule({
        engine: t.storage.engine,
        config: { ...t.config, backupDir: blocked, backupIntervalMs: 20 },
        logger: captureLogger().logger,
        hooks: {
          backupFinished(event) {
            t.metrics.recorder.backupFinished(event);
            if (event.outcome === "failure") resolve();
          },
        },
      });
      defer(() => schedule.stop());
    });
    await failed;
    expect(
      (await scrape(t.app)).get('app_backups_total{kind="scheduled",outcome="failure"}'),
    ).toBeGreaterThan(0);
  });

  it("shows what the recorder is told: drills, restores, checkpoints, maintenance", async () => {
    const t = await metricsApp();
    let m = await scrape(t.app);
    expect(m.get("app_restore_drill_last_success_timestamp_seconds")).toBe(0);
    expect(m.get("app_maintenance_mode")).toBe(0);
    // No off-site series at all while off-site backups are off.
    expect([...m.keys()].filter((key) => key.includes("offsite"))).toEqual([]);
    const { recorder } = t.metrics;
    const before = Date.now() / 1000;
    recorder.drillFinished({ outcome: "success", seconds: 3 });
    recorder.restoreFinished({ outcome: "failure", seconds: 0.5 });
    recorder.checkpoint("busy");
    recorder.setMaintenance(true);
    m = await scrape(t.app);
    expect(m.get('app_restore_drills_total{outcome="success"}')).toBe(1);
    expect(m.get("app_restore_drill_last_success_timestamp_seconds")).toBeGreaterThanOrEqual(before);
    expect(m.get('app_restores_total{outcome="failure"}')).toBe(1);
    expect(m.get("app_restore_last_duration_seconds")).toBe(0.5);
    expect(m.get('app_database_checkpoints_total{outcome="busy"}')).toBe(1);
    expect(m.get("app_maintenance_mode")).toBe(1);
  });

  it("gives each app its own registry and leaves prom-client's global one empty", async () => {
    const a = await metricsApp();
    const b = await metricsApp();
    await request(a.app).get("/health").expect(200);
    await request(a.app).get("/health").expect(200);
    const key = 'http_request_duration_seconds_count{method="GET",route="/health",status_code="200"}';
    expect((await scrape(a.app)).get(key)).toBe(2);
    expect((await scrape(b.app)).get(key)).toBeUndefined();
    const { register } = await import("prom-client");
    expect(register.getMetricsAsArray()).toEqual([]);
  });

  it("says which version runs on which Node.js, and includes the process metrics by default", async () => {
    const t = await metricsApp();
    const { createServiceMetrics } = await import("../src/metrics/service-metrics.ts");
    const metrics = createServiceMetrics({ storage: t.storage, config: t.config });
    const app = createApp({ config: t.config, storage: t.storage, logger: captureLogger().logger, metrics });
    const m = await scrape(app);
    const { default: packageJson } = await import("../package.json", { with: { type: "json" } });
    expect(m.get(`app_build_info{version="${packageJson.version}",node="${process.version}"}`)).toBe(1);
    expect(m.get("process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(m.has("nodejs_eventloop_lag_seconds")).toBe(true);
  });
});
