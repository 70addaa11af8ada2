// SQLite's own /health facts (journal mode, WAL and file sizes, the row-count limit) and what the public
// /health never shows; what every engine shares is in health-engines.test.ts.
import fs from "node:fs";
import path from "node:path";
import request from "supertest";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import packageJson from "../package.json" with { type: "json" };
import { createApp } from "../src/app.ts";
import { findMigrations } from "../src/db/migrator.ts";
import { createSqliteEngine } from "../src/db/sqlite/engine.ts";
import { takeBackup } from "../src/db/sqlite/snapshot.ts";
import { createStatusReader } from "../src/db/status.ts";
import { createMaintenance } from "../src/http/maintenance.ts";
import { createTestApp, migrationsWith, silentLogger, type TestApp } from "./helpers.ts";
import { ADMIN_TOKEN, bearer, METRICS_TOKEN, TOKENS } from "./ops-helpers.ts";

let t: TestApp;
beforeEach(async () => {
  t = await createTestApp(TOKENS);
});
afterEach(() => t.close());

describe("/health/details", () => {
  it("reports the database's state to the admin token", async () => {
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    const res = await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(200);
    expect(res.headers["cache-control"]).toBe("no-store");
    expect(res.body).toEqual({
      status: "ok",
      version: packageJson.version,
      uptimeSeconds: expect.any(Number),
      database: {
        engine: "sqlite",
        path: t.config.databasePath,
        journalMode: "wal",
        sqliteVersion: expect.stringMatching(/^3\.\d+\.\d+$/),
        sizeBytes: fs.statSync(t.config.databasePath).size,
        walSizeBytes: expect.any(Number),
        pageSize: 4096,
        pageCount: expect.any(Number),
        freelistCount: 0,
        availableBytes: expect.any(Number),
        migrations: { applied: 1, pending: 0, latest: "0001_create_notes" },
        lastBackup: null,
        tables: { notes: 1, schema_migrations: 1 },
      },
    });
    expect(res.body.database.walSizeBytes).toBeGreaterThan(0);
    expect(res.body.database.pageCount).toBeGreaterThan(1);
    expect(res.body.database.availableBytes).toBeGreaterThan(1024 * 1024);
  });

  it("says what is wrong in full: pending migrations, journal mode, an unqueryable database", async () => {
    const pending = await request(withPendingMigration())
      .get("/health/details")
      .set(bearer(ADMIN_TOKEN))
      .expect(503);
    expect(pending.body).toMatchObject({
      status: "error",
      reason: "1 migration(s) pending: run npm run migrate",
      database: { migrations: { applied: 1, pending: 1 } },
    });

    t.storage.sqlite.pragma("journal_mode = DELETE");
    const journal = await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(503);
    expect(journal.body.reason).toBe("the database is in delete journal mode, not WAL");

    t.storage.sqlite.close();
    const closed = await request(t.app).get("/health/details").set(bearer(ADMIN_TOKEN)).expect(503);
    expect(closed.body).toEqual({
      status: "error",
      reason: "the database cannot be queried",
      version: packageJson.version,
      uptimeSeconds: expect.any(Number),
    });
  });

  it("is refused without the admin token: 401 without one, with the metrics token, or a wrong one", async () => {
    for (const headers of [{}, bearer(METRICS_TOKEN), bearer(`${ADMIN_TOKEN}x`)]) {
      const res = await request(t.app).get("/health/details").set(headers).expect(401);
      expect(res.headers["www-authenticate"]).toBe("Bearer");
      expect(res.body.error.code).toBe("unauthorized");
      expect(JSON.stringify(res.body)).not.toContain(t.config.databasePath);
    }
  });
});

describe("/health", () => {
  it("answers only its status: no version, uptime, path or table", async () => {
    await request(t.app).get("/health").expect(200, { status: "ok" });
  });

  it("answers HEAD with the status and no body", async () => {
    const res = await request(t.app).head("/health").expect(200);
    expect(res.text).toBeUndefined();
  });

  it("answers HEAD with 503 when the database cannot serve", async () => {
    t.storage.sqlite.pragma("journal_mode = DELETE");
    await request(t.app).head("/health").expect(503);
  });

  it("answers 503 while migrations are pending", async () => {
    await request(withPendingMigration())
      .get("/health")
      .expect(503, { status: "error", reason: "migrations pending" });
  });

  it("answers 503 when the database is not in WAL mode", async () => {
    t.storage.sqlite.pragma("journal_mode = DELETE");
    await request(t.app).get("/health").expect(503, { status: "error", reason: "database misconfigured" });
  });

  it("names no path, table or file in any state: ok, pending, storage full, unqueryable, maintenance", async () => {
    const { sqlite } = t.storage;
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    const backup = takeBackup({
      databasePath: t.config.databasePath,
      backupDir: t.config.backupDir,
      kind: "manual",
    });
    const migrationsDir = migrationsWith(t.dir, {
      "0002_later.ts": "export async function up() {}\nexport async function down() {}\n",
    });
    // What must not leak, read from the test's own database and folders.
    const tables = sqlite.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all();
    const secrets = [
      t.dir,
      t.config.databasePath,
      t.config.backupDir,
      path.basename(t.config.databasePath),
      "app.db",
      backup.file,
      ...fs.readdirSync(migrationsDir),
      ...findMigrations(migrationsDir).map((m) => m.name),
      ...(tables as string[]),
      "schema_migrations",
      "notes",
      "wal",
      "sqlite",
    ];
    expect(tables).toEqual(expect.arrayContaining(["notes", "schema_migrations"]));

    const bodies: Record<string, unknown> = {};
    bodies.ok = (await request(t.app).get("/health").expect(200)).body;
    bodies.pending = (await request(withPendingMigration()).get("/health").expect(503)).body;
    const pageCount = Number(sqlite.pragma("page_count", { simple: true }));
    sqlite.pragma(`max_page_count = ${pageCount}`);
    bodies.full = (await request(t.app).get("/health").expect(503)).body;
    sqlite.pragma("max_page_count = 1000000");
    sqlite.pragma("journal_mode = DELETE");
    bodies.journal = (await request(t.app).get("/health").expect(503)).body;
    const maintenance = createMaintenance();
    const underMaintenance = createApp({
      config: t.config,
      storage: t.storage,
      logger: silentLogger,
      maintenance,
    });
    await maintenance.begin(1_000);
    bodies.maintenance = (await request(underMaintenance).get("/health").expect(503)).body;
    maintenance.end();
    sqlite.close();
    bodies.unqueryable = (await request(t.app).get("/health").expect(503)).body;

    expect(bodies).toEqual({
      ok: { status: "ok" },
      pending: { status: "error", reason: "migrations pending" },
      full: { status: "error", reason: "storage full" },
      journal: { status: "error", reason: "database misconfigured" },
      maintenance: { status: "maintenance", reason: "maintenance" },
      unqueryable: { status: "error", reason: "database unavailable" },
    });
    for (const [state, body] of Object.entries(bodies)) {
      const text = JSON.stringify(body).toLowerCase();
      for (const secret of secrets)
        expect(text, `${state} names ${secret}`).not.toContain(secret.toLowerCase());
    }
  });
});

/** The test's app over a migrations folder that holds one migration more than the database has. */
function withPendingMigration() {
  const migrationsDir = migrationsWith(t.dir, {
    "0002_later.ts": "export async function up() {}\nexport async function down() {}\n",
  });
  return createApp({ config: { ...t.config, migrationsDir }, storage: t.storage, logger: silentLogger });
}

describe("database status", () => {
  it("leaves row counts out of a database too large to scan, and counts a small one", async () => {
    const size = t.storage.sqlite.pragma("page_count", { simple: true }) as number;
    const pageSize = t.storage.sqlite.pragma("page_size", { simple: true }) as number;
    // Both open before either closes: closing runs PRAGMA optimize, which may add a page.
    const [under, at] = await Promise.all(
      [size * pageSize - 1, size * pageSize].map((bytes) =>
        createSqliteEngine({ ...t.config, countRowsUpToBytes: bytes }).open(),
      ),
    );
    try {
      expect(await under!.countRowsIfSmall()).toBeNull();
      expect(await at!.countRowsIfSmall()).toEqual({ notes: 0, schema_migrations: 1 });
    } finally {
      await Promise.all([under!.close(), at!.close()]);
    }
  });

  it("reads the WAL size and file size from the files themselves", async () => {
    const read = async () =>
      (await createStatusReader({ storage: t.storage, backupDir: t.config.backupDir, migrations: [] })())
        .status;
    const wal = `${t.config.databasePath}-wal`;
    expect((await read()).walSizeBytes).toBe(fs.statSync(wal).size);
    t.storage.sqlite.pragma("wal_checkpoint(TRUNCATE)");
    expect((await read()).walSizeBytes).toBe(0);
    expect(path.basename((await read()).path as string)).toBe("app.db");
  });
});
