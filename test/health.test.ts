import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import request from "supertest";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import packageJson from "../package.json" with { type: "json" };
import { createApp } from "../src/app.ts";
import { findMigrations } from "../src/db/migrator.ts";
import { createSqliteEngine } from "../src/db/sqlite/engine.ts";
import { takeBackup } from "../src/db/sqlite/snapshot.ts";
import { createStatusReader } from "../src/db/status.ts";
import { createTestApp, migrationsWith, silentLogger, type TestApp } from "./helpers.ts";

let t: TestApp;
beforeEach(async () => {
  t = await createTestApp();
});
afterEach(() => t.close());

describe("/health", () => {
  it("reports the database's state", async () => {
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    const res = await request(t.app).get("/health").expect(200);
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

  it("answers HEAD with the status and no body", async () => {
    const res = await request(t.app).head("/health").expect(200);
    expect(res.text).toBeUndefined();
  });

  it("reports the newest backup with its age", async () => {
    const backup = takeBackup({
      databasePath: t.config.databasePath,
      backupDir: t.config.backupDir,
      kind: "manual",
    });
    const res = await request(t.app).get("/health").expect(200);
    expect(res.body.database.lastBackup).toEqual({
      file: backup.file,
      createdAt: backup.createdAt.toISOString(),
      ageSeconds: expect.any(Number),
    });
    expect(res.body.database.lastBackup.ageSeconds).toBeLessThan(60);
  });

  it("answers 503 while migrations are pending", async () => {
    const migrationsDir = migrationsWith(t.dir, {
      "0002_later.ts": "export async function up() {}\nexport async function down() {}\n",
    });
    const app = createApp({
      config: { ...t.config, migrationsDir },
      storage: t.storage,
      logger: silentLogger,
    });
    const res = await request(app).get("/health").expect(503);
    expect(res.body).toMatchObject({
      status: "error",
      reason: "1 migration(s) pending: run npm run migrate",
      database: { migrations: { applied: 1, pending: 1 } },
    });
  });

  it("answers 503 when the database is not in WAL mode", async () => {
    t.storage.sqlite.pragma("journal_mode = DELETE");
    const res = await request(t.app).get("/health").expect(503);
    expect(res.body).toMatchObject({
      status: "error",
      reason: "the database is in delete journal mode, not WAL",
    });
  });

  it("answers 503 when the database cannot be queried, while /health/live still answers 200", async () => {
    t.storage.sqlite.close();
    const res = await request(t.app).get("/health").expect(503);
    expect(res.body).toMatchObject({ status: "error", reason: "the database cannot be queried" });
    expect(JSON.stringify(res.body)).not.toContain("The database connection is not open");
    await request(t.app).get("/health/live").expect(200, { status: "ok" });
  });
});

describe("database status", () => {
  it("counts rows at most once per cache period, so /health never scans per request", async () => {
    let clock = 1_000_000;
    const read = createStatusReader({
      storage: t.storage,
      backupDir: t.config.backupDir,
      migrations: findMigrations(t.config.migrationsDir),
      cacheMs: 5_000,
      now: () => clock,
    });
    const notes = async () => (await read()).status.tables?.notes;
    expect(await notes()).toBe(0);
    t.storage.sqlite.exec(
      "INSERT INTO notes (title, body, created_at, updated_at) VALUES ('a', '', 'x', 'x')",
    );
    clock += 4_999;
    expect(await notes()).toBe(0);
    clock += 1;
    expect(await notes()).toBe(1);
  });

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

  it("sees a migration applied by another connection on the next read", async () => {
    const read = createStatusReader({
      storage: t.storage,
      backupDir: t.config.backupDir,
      migrations: [...findMigrations(t.config.migrationsDir), { name: "9999_later", path: "unused" }],
    });
    expect((await read()).status.migrations).toEqual({ applied: 1, pending: 1, latest: "0001_create_notes" });
    const other = new BetterSqlite3(t.config.databasePath);
    other.prepare("INSERT INTO schema_migrations (name, applied_at) VALUES ('9999_later', 'x')").run();
    other.close();
    expect((await read()).status.migrations).toEqual({ applied: 2, pending: 0, latest: "9999_later" });
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
