// The storage interface (src/db/storage.ts), the same assertions against every engine: what the
// rest of the service may rely on whichever one DATABASE_URL selects.
import fs from "node:fs";
import path from "node:path";
import { type Kysely, sql } from "kysely";
import { expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { classifyDatabaseError } from "../src/db/errors.ts";
import { runMigrations } from "../src/db/migrator.ts";
import type { Storage } from "../src/db/storage.ts";
import { asPostgres, describeEngines, describePostgres, openTestStorage } from "./engines.ts";
import { cleanupAfterEach, makeTempDir, silentLogger } from "./helpers.ts";

const { defer } = cleanupAfterEach();

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function migrated(engine: Parameters<typeof openTestStorage>[0]) {
  const t = await openTestStorage(engine);
  defer(() => t.close());
  await runMigrations({
    storage: t.storage,
    migrationsDir: t.config.migrationsDir,
    backupDir: t.config.backupDir,
    logger: silentLogger,
  });
  return t;
}

const addNote = (storage: Storage, title: string) => {
  const now = new Date().toISOString();
  return storage.kysely
    .insertInto("notes")
    .values({ title, body: "", created_at: now, updated_at: now })
    .returningAll()
    .executeTakeFirstOrThrow();
};

describeEngines("Storage", (engine) => {
  it("has no applied migrations before the first, then the one it applied", async () => {
    const t = await openTestStorage(engine);
    defer(() => t.close());
    expect(await t.storage.readAppliedMigrations()).toEqual([]);
    await runMigrations({
      storage: t.storage,
      migrationsDir: t.config.migrationsDir,
      backupDir: t.config.backupDir,
      logger: silentLogger,
    });
    expect(await t.storage.readAppliedMigrations()).toEqual(["0001_create_notes"]);
    expect(await t.storage.engine.exists()).toBe(true);
  });

  it("returns ids and counts as numbers, timestamps as the ISO text written, affected rows as bigints", async () => {
    const { storage } = await migrated(engine);
    const first = await addNote(storage, "one");
    const second = await addNote(storage, "two");
    expect(first).toEqual({
      id: 1,
      title: "one",
      body: "",
      created_at: expect.stringMatching(ISO),
      updated_at: first.created_at,
    });
    expect(second.id).toBe(2);
    const { n } = await storage.kysely
      .selectFrom("notes")
      .select((eb) => eb.fn.countAll().as("n"))
      .executeTakeFirstOrThrow();
    expect(n).toBe(2);
    const read = await storage.kysely
      .selectFrom("notes")
      .selectAll()
      .where("id", "=", 1)
      .executeTakeFirstOrThrow();
    expect(read).toEqual(first);
    const deleted = await storage.kysely.deleteFrom("notes").where("id", "=", 2).executeTakeFirst();
    expect(deleted.numDeletedRows).toBe(1n);
    // Never reused after a delete.
    expect((await addNote(storage, "three")).id).toBe(3);
  });

  it("sorts the same failures into the same kinds", async () => {
    const { storage } = await migrated(engine);
    const tooLong = await addNote(storage, "x".repeat(201)).catch((e: unknown) => e);
    expect(classifyDatabaseError(tooLong)).toBe("constraint");
    await sql`CREATE UNIQUE INDEX one_title ON notes (title)`.execute(storage.kysely);
    await addNote(storage, "same");
    expect(classifyDatabaseError(await addNote(storage, "same").catch((e: unknown) => e))).toBe("constraint");
    const missing = await sql`SELECT * FROM no_such_table`.execute(storage.kysely).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(Error);
    expect(classifyDatabaseError(missing)).toBeUndefined();
  });

  it("rolls the migration transaction back, schema and record, when its work throws", async () => {
    const { storage } = await migrated(engine);
    const error = await storage
      .inMigrationTransaction(
        async (tx) => {
          await tx.kysely.schema.createTable("half_done").addColumn("id", "integer").execute();
          await tx.record("0002_half_done");
          expect(await tx.readApplied()).toEqual(["0001_create_notes", "0002_half_done"]);
          throw new Error("boom");
        },
        { lockTimeoutMs: 1_000, logger: silentLogger },
      )
      .catch((e: unknown) => e);
    expect((error as Error).message).toBe("boom");
    expect(await storage.readAppliedMigrations()).toEqual(["0001_create_notes"]);
    const created = await sql`SELECT * FROM half_done`.execute(storage.kysely).catch((e: unknown) => e);
    expect(created).toBeInstanceOf(Error);
  });

  it("reports health facts with no problem, and row counts of a small database", async () => {
    const { storage } = await migrated(engine);
    await addNote(storage, "counted");
    const health = await storage.readHealth();
    expect(health.problem).toBeUndefined();
    expect(Object.keys(health.facts).length).toBeGreaterThan(3);
    expect(await storage.countRowsIfSmall()).toEqual({ notes: 1, schema_migrations: 1 });
    expect(await storage.engine.countRows()).toEqual({ notes: 1, schema_migrations: 1 });
  });

  it("backs up while serving, verifies the backup and the live database, and refuses a truncated copy", async () => {
    const { storage, config } = await migrated(engine);
    for (let i = 0; i < 20; i++) await addNote(storage, `note ${i}`);
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    expect(path.extname(backup.file)).toBe(engine === "sqlite" ? ".db" : ".dump");
    expect(listBackups(config.backupDir)).toEqual([backup]);
    expect(fs.statSync(backup.path).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(config.backupDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect((await storage.engine.verify(backup.path)).ok).toBe(true);
    expect((await storage.engine.verify()).ok).toBe(true);

    const truncated = path.join(config.backupDir, "truncated");
    fs.writeFileSync(truncated, fs.readFileSync(backup.path).subarray(0, Math.floor(backup.sizeBytes / 2)));
    // Refused either way: a failing verdict with findings (PostgreSQL), or an error (SQLite cannot
    // open a file cut in half far enough to check it).
    const refused = await storage.engine.verify(truncated).then(
      (verdict) => !verdict.ok && verdict.checks.some((c) => c.findings.length > 0),
      () => true,
    );
    expect(refused).toBe(true);
  });

  it("opens a scratch database loaded from a backup, and drops it on dispose", async () => {
    const { storage, config } = await migrated(engine);
    await addNote(storage, "in the backup");
    const backup = await storage.engine.backup({ backupDir: config.backupDir, kind: "manual" });
    await addNote(storage, "only live");
    const scratchDir = makeTempDir();
    defer(() => fs.rmSync(scratchDir, { recursive: true, force: true }));
    const scratch = await storage.engine.openScratch(backup, scratchDir);
    let disposed = false;
    defer(() => (disposed ? undefined : scratch.dispose()));
    const titles = await scratch.storage.kysely.selectFrom("notes").select("title").execute();
    expect(titles.map((r) => r.title)).toEqual(["in the backup"]);
    expect(await scratch.storage.readAppliedMigrations()).toEqual(["0001_create_notes"]);
    expect(scratch.engine.target).not.toBe(storage.engine.target);
    await scratch.dispose();
    disposed = true;
    // SQLite's scratch file goes with its folder (withScratchDir); PostgreSQL's database is dropped.
    if (engine === "postgres") expect(await scratch.engine.exists()).toBe(false);
    expect(await storage.engine.countRows()).toEqual({ notes: 2, schema_migrations: 1 });
  });

  it("closes twice without error", async () => {
    const { storage } = await migrated(engine);
    await storage.close();
    await storage.close();
  });
});

describePostgres("Storage on PostgreSQL only", () => {
  it("fails loudly on an int8 beyond 2^53 rather than rounding it", async () => {
    const { storage } = await migrated("postgres");
    const exact = await sql<{ n: number }>`SELECT 9007199254740991::int8 AS n`.execute(storage.kysely);
    expect(exact.rows[0]!.n).toBe(Number.MAX_SAFE_INTEGER);
    const error = await sql`SELECT 9007199254740993::int8 AS n`
      .execute(storage.kysely)
      .catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/beyond 2\^53/);
  });

  it("returns timestamptz as the ISO 8601 text the application writes", async () => {
    const { storage } = await migrated("postgres");
    const { rows } = await sql<{
      at: string;
    }>`SELECT '2026-11-25 14:25:49.123+00'::timestamptz AS at`.execute(storage.kysely);
    expect(rows[0]!.at).toBe("2026-11-25T14:25:49.123Z");
  });

  it("gives the service's sessions their timeouts and name, and the migration session none that would cut it short", async () => {
    const t = await openTestStorage("postgres", {
      DATABASE_STATEMENT_TIMEOUT_MS: "7000",
      DATABASE_LOCK_TIMEOUT_MS: "300",
      DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: "9000",
      DATABASE_APPLICATION_NAME: "settings-test",
    });
    defer(() => t.close());
    const settings = (db: Kysely<any>) =>
      sql<{
        statement_timeout: string;
        lock_timeout: string;
        idle: string;
        application_name: string;
      }>`SELECT current_setting('statement_timeout') AS statement_timeout, current_setting('lock_timeout') AS lock_timeout,
                current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('application_name') AS application_name`
        .execute(db)
        .then((r) => r.rows[0]);
    expect(await settings(t.storage.kysely)).toEqual({
      statement_timeout: "7s",
      lock_timeout: "300ms",
      idle: "9s",
      application_name: "settings-test",
    });
    const inMigration = await t.storage.inMigrationTransaction((tx) => settings(tx.kysely), {
      lockTimeoutMs: 60_000,
      logger: silentLogger,
    });
    expect(inMigration).toEqual({
      statement_timeout: "0",
      lock_timeout: "1min",
      idle: "0",
      application_name: "settings-test:migrate",
    });
  });

  it("bounds close() by SHUTDOWN_TIMEOUT_MS when a connection is never handed back", async () => {
    const t = await openTestStorage("postgres", { SHUTDOWN_TIMEOUT_MS: "300" });
    defer(() => t.close());
    const held = await asPostgres(t.storage).pool.connect();
    defer(() => held.release(true));
    const started = performance.now();
    await t.storage.close();
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("creates ids GENERATED BY DEFAULT, so a copy of rows may keep its ids", async () => {
    const { storage } = await migrated("postgres");
    const now = new Date().toISOString();
    await storage.kysely
      .insertInto("notes")
      .values({ id: 41, title: "explicit", body: "", created_at: now, updated_at: now } as never)
      .execute();
    expect((await addNote(storage, "next")).id).toBe(1);
  });
});
