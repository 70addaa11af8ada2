// /health and /health/details through the storage interface, on every engine: the newest backup,
// pending migrations, a database that cannot be queried, and the status reader's caching. What is
// SQLite's own (journal mode, WAL and file sizes) stays in health.test.ts; PostgreSQL's facts are
// checked in postgres.test.ts.
import { sql } from "kysely";
import request from "supertest";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createApp } from "../src/app.ts";
import { findMigrations } from "../src/db/migrator.ts";
import { createStatusReader } from "../src/db/status.ts";
import { loadEngine } from "../src/db/storage.ts";
import { recordResponses } from "./contract.ts";
import { createEngineTestApp, describeEngines, type EngineTestApp } from "./engines.ts";
import { migrationsWith, silentLogger } from "./helpers.ts";
import { ADMIN_TOKEN, bearer, TOKENS } from "./ops-helpers.ts";

describeEngines("/health", (engine) => {
  let t: EngineTestApp;
  beforeEach(async () => {
    t = await createEngineTestApp(engine, TOKENS);
  });
  afterEach(() => t.close());

  const details = (app = t.app) => request(app).get("/health/details").set(bearer(ADMIN_TOKEN));

  it("reports the engine, migrations and row counts to the admin token, and only its status to anyone", async () => {
    await request(t.app).post("/api/notes").send({ title: "one" }).expect(201);
    await request(t.app).get("/health").expect(200, { status: "ok" });
    const res = await details().expect(200);
    expect(res.body.database).toMatchObject({
      engine,
      migrations: { applied: 1, pending: 0, latest: "0001_create_notes" },
      lastBackup: null,
      tables: { notes: 1, schema_migrations: 1 },
    });
  });

  it("reports the newest backup with its age", async () => {
    const backup = await t.storage.engine.backup({ backupDir: t.config.backupDir, kind: "manual" });
    const res = await details().expect(200);
    expect(res.body.database.lastBackup).toEqual({
      file: backup.file,
      createdAt: backup.createdAt.toISOString(),
      ageSeconds: expect.any(Number),
    });
    expect(res.body.database.lastBackup.ageSeconds).toBeLessThan(60);
  });

  it("answers 503 while migrations are pending, saying so in full behind the token", async () => {
    const migrationsDir = migrationsWith(t.dir, {
      "0002_later.ts": "export async function up() {}\nexport async function down() {}\n",
    });
    const app = recordResponses(
      createApp({ config: { ...t.config, migrationsDir }, storage: t.storage, logger: silentLogger }),
    );
    await request(app).get("/health").expect(503, { status: "error", reason: "migrations pending" });
    const res = await details(app).expect(503);
    expect(res.body).toMatchObject({
      status: "error",
      reason: "1 migration(s) pending: run npm run migrate",
      database: { migrations: { applied: 1, pending: 1 } },
    });
  });

  it("answers 503 when the database cannot be queried, while /health/live still answers 200", async () => {
    await t.storage.close();
    await request(t.app).get("/health").expect(503, { status: "error", reason: "database unavailable" });
    const res = await details().expect(503);
    expect(res.body).toMatchObject({ status: "error", reason: "the database cannot be queried" });
    await request(t.app).get("/health/live").expect(200, { status: "ok" });
  });

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
    await sql`INSERT INTO notes (title, body, created_at, updated_at) VALUES ('a', '', 'x', 'x')`.execute(
      t.storage.kysely,
    );
    clock += 4_999;
    expect(await notes()).toBe(0);
    clock += 1;
    expect(await notes()).toBe(1);
  });

  it("sees a migration applied by another connection on the next read", async () => {
    const read = createStatusReader({
      storage: t.storage,
      backupDir: t.config.backupDir,
      migrations: [...findMigrations(t.config.migrationsDir), { name: "9999_later", path: "unused" }],
    });
    expect((await read()).status.migrations).toEqual({ applied: 1, pending: 1, latest: "0001_create_notes" });
    // Another process's migration, as far as this connection can tell.
    const other = await (await loadEngine(t.config)).open();
    await sql`INSERT INTO schema_migrations (name, applied_at) VALUES ('9999_later', 'x')`.execute(
      other.kysely,
    );
    await other.close();
    expect((await read()).status.migrations).toEqual({ applied: 2, pending: 0, latest: "9999_later" });
  });
});
