import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import {
  findMigrations,
  MigrationError,
  readMigrationStatus,
  revertLastMigration,
  runMigrations,
} from "../src/db/migrator.ts";
import type { SqliteStorage } from "../src/db/sqlite/engine.ts";
import { verifyDatabaseFile } from "../src/db/sqlite/snapshot.ts";
import {
  captureLogger,
  cleanupAfterEach,
  makeTempDir,
  migrationsWith,
  openSqliteStorage,
  ROOT,
  runNode,
  silentLogger,
} from "./helpers.ts";

const { defer } = cleanupAfterEach();

async function setup(extra: Record<string, string> = {}) {
  const dir = makeTempDir();
  const file = path.join(dir, "data", "app.db");
  const backupDir = path.join(dir, "backups");
  const migrationsDir = migrationsWith(dir, extra);
  const db = await openSqliteStorage({ databasePath: file, backupDir, busyTimeoutMs: 2000 });
  defer(() => fs.rmSync(dir, { recursive: true, force: true }));
  defer(() => db.close());
  return { dir, file, backupDir, migrationsDir, db };
}

const migrate = (db: SqliteStorage, migrationsDir: string, backupDir: string, logger = silentLogger) =>
  runMigrations({ storage: db, migrationsDir, backupDir, logger });

const schemaOf = (db: SqliteStorage) =>
  db.sqlite.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name").all();

const ADD_TAGS = `
export async function up(db) { await db.schema.alterTable("notes").addColumn("tags", "text", (c) => c.notNull().defaultTo("[]")).execute(); }
export async function down(db) { await db.schema.alterTable("notes").dropColumn("tags").execute(); }
`;
const FAILS_HALF_WAY = `
export async function up(db) {
  await db.insertInto("notes").values({ title: "inserted by a failing migration", body: "", created_at: "x", updated_at: "x" }).execute();
  await db.schema.createTable("half_done").addColumn("id", "integer").execute();
  throw new Error("boom in 0003");
}
export async function down() {}
`;

function seedNotes(db: SqliteStorage, count: number) {
  const insert = db.sqlite.prepare(
    "INSERT INTO notes (title, body, created_at, updated_at) VALUES (?, '', 'now', 'now')",
  );
  for (let i = 0; i < count; i++) insert.run(`note ${i}`);
}

describe("runMigrations", () => {
  it("applies pending migrations on a fresh database without taking a backup", async () => {
    const { db, migrationsDir, backupDir } = await setup();
    const result = await migrate(db, migrationsDir, backupDir);
    expect(result).toEqual({ names: ["0001_create_notes"], backup: undefined });
    expect(listBackups(backupDir)).toEqual([]);
    expect(await readMigrationStatus(db, findMigrations(migrationsDir))).toEqual({
      applied: ["0001_create_notes"],
      pending: [],
    });
  });

  it("does nothing, and takes no backup, when nothing is pending", async () => {
    const { db, migrationsDir, backupDir } = await setup();
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 3);
    expect(await migrate(db, migrationsDir, backupDir)).toEqual({ names: [], backup: undefined });
    expect(listBackups(backupDir)).toEqual([]);
  });

  it("backs up a database holding data before migrating, verified and named after the first pending migration", async () => {
    const { db, migrationsDir, backupDir } = await setup();
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 25);
    fs.writeFileSync(path.join(migrationsDir, "0002_add_tags.ts"), ADD_TAGS);
    const { logger, lines } = captureLogger();
    const result = await migrate(db, migrationsDir, backupDir, logger);

    expect(result.names).toEqual(["0002_add_tags"]);
    const [backup] = listBackups(backupDir);
    expect(backup).toMatchObject({ kind: "pre-migration", label: "0002_add_tags", database: "app" });
    expect(backup!.file).toMatch(/^app-\d{8}T\d{9}Z-pre-migration-0002_add_tags\.db$/);
    expect(result.backup?.path).toBe(backup!.path);
    expect(verifyDatabaseFile(backup!.path).integrity).toEqual(["ok"]);
    expect((fs.statSync(backup!.path).mode & 0o777).toString(8)).toBe("600");
    // The backup is the database as it was before the migration: data, and no tags column.
    const copy = new BetterSqlite3(backup!.path, { readonly: true });
    expect(copy.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(25);
    expect(copy.prepare("SELECT name FROM pragma_table_info('notes')").pluck().all()).not.toContain("tags");
    copy.close();
    expect(lines.find((l) => l.msg === "pre-migration backup taken and verified")?.backup).toBe(backup!.path);
    expect(fs.readdirSync(backupDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("leaves schema, data and record exactly as they were when a later migration fails", async () => {
    const { db, migrationsDir, backupDir } = await setup();
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 10);
    fs.writeFileSync(path.join(migrationsDir, "0002_add_tags.ts"), ADD_TAGS);
    fs.writeFileSync(path.join(migrationsDir, "0003_fails.ts"), FAILS_HALF_WAY);
    const schemaBefore = schemaOf(db);
    const notesBefore = db.sqlite.prepare("SELECT * FROM notes ORDER BY id").all();

    const error = await migrate(db, migrationsDir, backupDir).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(MigrationError);
    const [backup] = listBackups(backupDir);
    expect((error as Error).message).toBe(
      `migration 0003_fails failed: boom in 0003. Rolled back: the database is as it was. Pre-migration backup: ${backup!.path}.`,
    );
    expect(backup!.label).toBe("0002_add_tags");
    expect(verifyDatabaseFile(backup!.path).integrity).toEqual(["ok"]);
    expect(schemaOf(db)).toEqual(schemaBefore);
    expect(db.sqlite.prepare("SELECT * FROM notes ORDER BY id").all()).toEqual(notesBefore);
    expect(await readMigrationStatus(db, findMigrations(migrationsDir))).toEqual({
      applied: ["0001_create_notes"],
      pending: ["0002_add_tags", "0003_fails"],
    });
    expect(db.sqlite.inTransaction).toBe(false);
    expect(db.sqlite.pragma("foreign_keys", { simple: true })).toBe(1);
  });

  it("rebuilds a parent table without cascading deletes into its children, then turns foreign keys back on", async () => {
    const { db, migrationsDir, backupDir } = await setup({
      "0002_tags.ts": `
export async function up(db) {
  await db.schema.createTable("tags").addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("note_id", "integer", (c) => c.notNull().references("notes.id").onDelete("cascade")).execute();
}
export async function down(db) { await db.schema.dropTable("tags").execute(); }`,
    });
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 3);
    db.sqlite.exec("INSERT INTO tags (note_id) VALUES (1), (2), (3)");
    // The documented way to change a column's constraint: create, copy, drop, rename.
    fs.writeFileSync(
      path.join(migrationsDir, "0003_rebuild_notes.ts"),
      `import { sql } from "kysely";
export async function up(db) {
  await sql\`CREATE TABLE notes_new (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, updated_at TEXT NOT NULL)\`.execute(db);
  await sql\`INSERT INTO notes_new SELECT * FROM notes\`.execute(db);
  await sql\`DROP TABLE notes\`.execute(db);
  await sql\`ALTER TABLE notes_new RENAME TO notes\`.execute(db);
}
export async function down() {}`,
    );
    await migrate(db, migrationsDir, backupDir);
    expect(db.sqlite.prepare("SELECT count(*) FROM tags").pluck().get()).toBe(3);
    expect(db.sqlite.pragma("foreign_keys", { simple: true })).toBe(1);
  });

  it("rolls back migrations that leave a foreign key violation", async () => {
    const { db, migrationsDir, backupDir } = await setup({
      "0002_orphan.ts": `import { sql } from "kysely";
export async function up(db) {
  await sql\`CREATE TABLE tags (id INTEGER PRIMARY KEY, note_id INTEGER NOT NULL REFERENCES notes(id))\`.execute(db);
  await sql\`INSERT INTO tags (note_id) VALUES (999)\`.execute(db);
}
export async function down() {}`,
    });
    const error = await migrate(db, migrationsDir, backupDir).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(
      /foreign key violation\(s\) \(first: tags -> notes\); rolled back/,
    );
    expect(db.sqlite.prepare("SELECT name FROM sqlite_schema WHERE name IN ('tags', 'notes')").all()).toEqual(
      [],
    );
  });

  it("reverts the last migration after a backup", async () => {
    const { db, migrationsDir, backupDir } = await setup({ "0002_add_tags.ts": ADD_TAGS });
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 2);
    const result = await revertLastMigration({ storage: db, migrationsDir, backupDir, logger: silentLogger });
    expect(result.names).toEqual(["0002_add_tags"]);
    expect(result.backup).toMatchObject({ kind: "pre-rollback", label: "0002_add_tags" });
    expect(db.sqlite.prepare("SELECT name FROM pragma_table_info('notes')").pluck().all()).not.toContain(
      "tags",
    );
    expect((await readMigrationStatus(db, findMigrations(migrationsDir))).pending).toEqual(["0002_add_tags"]);
    expect(db.sqlite.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(2);
  });

  it("lets exactly one of two concurrent processes apply the pending migrations, with one backup", async () => {
    const { db, file, migrationsDir, backupDir } = await setup();
    await migrate(db, migrationsDir, backupDir);
    seedNotes(db, 5);
    await db.close();
    // Slow enough that both processes see it pending before either commits.
    fs.writeFileSync(
      path.join(migrationsDir, "0002_slow.ts"),
      `export async function up(db) {
  await db.schema.createTable("slow").addColumn("id", "integer").execute();
  await db.insertInto("slow").values({ id: 1 }).execute();
  const end = Date.now() + 1500; while (Date.now() < end) {}
}
export async function down() {}`,
    );
    const env = {
      DATABASE_PATH: file,
      BACKUP_DIR: backupDir,
      MIGRATIONS_DIR: migrationsDir,
      BUSY_TIMEOUT_MS: "500",
    };
    const children = [0, 1].map(() => runNode(path.join(ROOT, "scripts/migrate.ts"), ["up", "--json"], env));
    const outputs = await Promise.all(
      children.map(async (child) => {
        const { code } = await child.exited;
        expect(code, child.stderr()).toBe(0);
        return child.logs.find((l) => "applied" in l) as { applied: string[] };
      }),
    );
    expect(outputs.map((o) => o.applied.length).sort()).toEqual([0, 1]);
    expect(listBackups(backupDir)).toHaveLength(1);
    const check = new BetterSqlite3(file, { readonly: true });
    expect(check.prepare("SELECT name FROM schema_migrations ORDER BY name").pluck().all()).toEqual([
      "0001_create_notes",
      "0002_slow",
    ]);
    expect(check.prepare("SELECT count(*) FROM slow").pluck().get()).toBe(1);
    check.close();
  });
});
