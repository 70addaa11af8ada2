import fs from "node:fs";
import path from "node:path";
import { sql } from "kysely";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import {
  findMigrations,
  MigrationError,
  readMigrationStatus,
  revertLastMigration,
  runMigrations,
} from "../src/db/migrator.ts";
import { type EngineName, loadEngine, type Storage } from "../src/db/storage.ts";
import { asSqlite, describeEngines, openTestStorage } from "./engines.ts";
import { captureLogger, cleanupAfterEach, migrationsWith, ROOT, runNode, silentLogger } from "./helpers.ts";

const { defer } = cleanupAfterEach();

async function setup(engine: EngineName, extra: Record<string, string> = {}) {
  const t = await openTestStorage(engine);
  defer(() => t.close());
  const migrationsDir = migrationsWith(t.dir, extra);
  return { dir: t.dir, backupDir: t.config.backupDir, migrationsDir, db: t.storage, config: t.config };
}

const migrate = (db: Storage, migrationsDir: string, backupDir: string, logger = silentLogger) =>
  runMigrations({ storage: db, migrationsDir, backupDir, logger });

/** Tables and their columns, as the engine's catalog describes them. */
async function schemaOf(db: Storage) {
  const query =
    db.engine.name === "sqlite"
      ? sql`SELECT type, name, sql FROM sqlite_schema ORDER BY name`
      : sql`SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod) AS type
              FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
             WHERE c.relnamespace = current_schema()::regnamespace ORDER BY 1, 3`;
  return (await query.execute(db.kysely)).rows;
}

async function columnsOf(db: Storage, table: string): Promise<string[]> {
  const query =
    db.engine.name === "sqlite"
      ? sql<{ name: string }>`SELECT name FROM pragma_table_info(${table})`
      : sql<{ name: string }>`SELECT column_name AS name FROM information_schema.columns
                               WHERE table_schema = current_schema() AND table_name = ${table}`;
  return (await query.execute(db.kysely)).rows.map((r) => r.name);
}

async function notesOf(db: Storage) {
  return db.kysely.selectFrom("notes").selectAll().orderBy("id").execute();
}

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

async function seedNotes(db: Storage, count: number) {
  const rows = Array.from({ length: count }, (_, i) => ({
    title: `note ${i}`,
    body: "",
    created_at: "now",
    updated_at: "now",
  }));
  await db.kysely.insertInto("notes").values(rows).execute();
}

describeEngines("runMigrations", (engine) => {
  const extension = engine === "sqlite" ? "db" : "dump";
  const database = engine === "sqlite" ? "app" : "test_";

  it("applies pending migrations on a fresh database without taking a backup", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine);
    const result = await migrate(db, migrationsDir, backupDir);
    expect(result).toEqual({ names: ["0001_create_notes"], backup: undefined });
    expect(listBackups(backupDir)).toEqual([]);
    expect(await readMigrationStatus(db, findMigrations(migrationsDir))).toEqual({
      applied: ["0001_create_notes"],
      pending: [],
    });
  });

  it("does nothing, and takes no backup, when nothing is pending", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 3);
    expect(await migrate(db, migrationsDir, backupDir)).toEqual({ names: [], backup: undefined });
    expect(listBackups(backupDir)).toEqual([]);
  });

  it("backs up a database holding data before migrating, verified and named after the first pending migration", async () => {
    const { db, dir, migrationsDir, backupDir } = await setup(engine);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 25);
    fs.writeFileSync(path.join(migrationsDir, "0002_add_tags.ts"), ADD_TAGS);
    const { logger, lines } = captureLogger();
    const result = await migrate(db, migrationsDir, backupDir, logger);

    expect(result.names).toEqual(["0002_add_tags"]);
    const [backup] = listBackups(backupDir);
    expect(backup).toMatchObject({
      kind: "pre-migration",
      label: "0002_add_tags",
      database: db.engine.database,
    });
    expect(backup!.file).toMatch(
      new RegExp(`^${database}.*-\\d{8}T\\d{9}Z-pre-migration-0002_add_tags\\.${extension}$`),
    );
    expect(result.backup?.path).toBe(backup!.path);
    expect((await db.engine.verify(backup!.path)).ok).toBe(true);
    expect((fs.statSync(backup!.path).mode & 0o777).toString(8)).toBe("600");
    // The backup is the database as it was before the migration: data, and no tags column.
    const copy = await db.engine.openScratch(backup!, fs.mkdtempSync(path.join(dir, "scratch-")));
    try {
      expect(await notesOf(copy.storage)).toHaveLength(25);
      expect(await columnsOf(copy.storage, "notes")).not.toContain("tags");
    } finally {
      await copy.dispose();
    }
    expect(lines.find((l) => l.msg === "pre-migration backup taken and verified")?.backup).toBe(backup!.path);
    expect(fs.readdirSync(backupDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("skips the backup when told to (MIGRATE_BACKUP=off), and says so", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 3);
    fs.writeFileSync(path.join(migrationsDir, "0002_add_tags.ts"), ADD_TAGS);
    const { logger, lines } = captureLogger();
    const result = await runMigrations({ storage: db, migrationsDir, backupDir, logger, backupFirst: "off" });
    expect(result).toEqual({ names: ["0002_add_tags"], backup: undefined });
    expect(listBackups(backupDir)).toEqual([]);
    expect(lines.find((l) => l.msg === "pre-migration backup skipped: MIGRATE_BACKUP=off")).toMatchObject({
      level: 40,
      migration: "0002_add_tags",
    });
  });

  it("leaves schema, data and record exactly as they were when a later migration fails", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 10);
    fs.writeFileSync(path.join(migrationsDir, "0002_add_tags.ts"), ADD_TAGS);
    fs.writeFileSync(path.join(migrationsDir, "0003_fails.ts"), FAILS_HALF_WAY);
    const schemaBefore = await schemaOf(db);
    const notesBefore = await notesOf(db);

    const error = await migrate(db, migrationsDir, backupDir).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(MigrationError);
    const [backup] = listBackups(backupDir);
    expect((error as Error).message).toBe(
      `migration 0003_fails failed: boom in 0003. Rolled back: the database is as it was. Pre-migration backup: ${backup!.path}.`,
    );
    expect(backup!.label).toBe("0002_add_tags");
    expect((await db.engine.verify(backup!.path)).ok).toBe(true);
    expect(await schemaOf(db)).toEqual(schemaBefore);
    expect(await notesOf(db)).toEqual(notesBefore);
    expect(await readMigrationStatus(db, findMigrations(migrationsDir))).toEqual({
      applied: ["0001_create_notes"],
      pending: ["0002_add_tags", "0003_fails"],
    });
    if (engine === "sqlite") {
      expect(asSqlite(db).sqlite.inTransaction).toBe(false);
      expect(asSqlite(db).sqlite.pragma("foreign_keys", { simple: true })).toBe(1);
    }
  });

  it("rolls back migrations that leave a foreign key violation", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine, {
      "0002_orphan.ts": `import { sql } from "kysely";
export async function up(db) {
  await sql\`CREATE TABLE tags (id INTEGER PRIMARY KEY, note_id INTEGER NOT NULL REFERENCES notes(id))\`.execute(db);
  await sql\`INSERT INTO tags (id, note_id) VALUES (1, 999)\`.execute(db);
}
export async function down() {}`,
    });
    const error = await migrate(db, migrationsDir, backupDir).catch((e: unknown) => e);
    // SQLite checks foreign keys before COMMIT (they are off during migrations); PostgreSQL at once.
    expect((error as Error).message).toMatch(
      engine === "sqlite"
        ? /foreign key violation\(s\) \(first: tags -> notes\); rolled back/
        : /migration 0002_orphan failed: .*violates foreign key constraint.*Rolled back/,
    );
    expect(await columnsOf(db, "tags")).toEqual([]);
    expect(await columnsOf(db, "notes")).toEqual([]);
  });

  it("reverts the last migration after a backup", async () => {
    const { db, migrationsDir, backupDir } = await setup(engine, { "0002_add_tags.ts": ADD_TAGS });
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 2);
    const result = await revertLastMigration({ storage: db, migrationsDir, backupDir, logger: silentLogger });
    expect(result.names).toEqual(["0002_add_tags"]);
    expect(result.backup).toMatchObject({ kind: "pre-rollback", label: "0002_add_tags" });
    expect(await columnsOf(db, "notes")).not.toContain("tags");
    expect((await readMigrationStatus(db, findMigrations(migrationsDir))).pending).toEqual(["0002_add_tags"]);
    expect(await notesOf(db)).toHaveLength(2);
  });

  // Two processes on SQLite; on PostgreSQL, where several instances share a server, four.
  const processes = engine === "sqlite" ? 2 : 4;
  it(`lets exactly one of ${processes} concurrent processes apply the pending migrations, with one backup`, async () => {
    const { db, migrationsDir, backupDir, config } = await setup(engine);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 5);
    await db.close();
    // Slow enough that every process sees it pending before the first commits.
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
      ...(config.databaseUrl ? { DATABASE_URL: config.databaseUrl } : { DATABASE_PATH: config.databasePath }),
      BACKUP_DIR: backupDir,
      MIGRATIONS_DIR: migrationsDir,
      BUSY_TIMEOUT_MS: "500",
    };
    const children = Array.from({ length: processes }, () =>
      runNode(path.join(ROOT, "scripts/migrate.ts"), ["up", "--json"], env),
    );
    const outputs = await Promise.all(
      children.map(async (child) => {
        const { code } = await child.exited;
        expect(code, child.stderr()).toBe(0);
        return child.logs.find((l) => "applied" in l) as { applied: string[] };
      }),
    );
    expect(outputs.map((o) => o.applied.length).sort()).toEqual([...Array(processes - 1).fill(0), 1]);
    expect(listBackups(backupDir)).toHaveLength(1);
    const check = await (await loadEngine(config)).open();
    defer(() => check.close());
    expect(await check.readAppliedMigrations()).toEqual(["0001_create_notes", "0002_slow"]);
    expect((await sql<{ n: number }>`SELECT count(*) AS n FROM slow`.execute(check.kysely)).rows[0]!.n).toBe(
      1,
    );
  });
});

describe("runMigrations on SQLite", () => {
  it("rebuilds a parent table without cascading deletes into its children, then turns foreign keys back on", async () => {
    const {
      db: storage,
      migrationsDir,
      backupDir,
    } = await setup("sqlite", {
      "0002_tags.ts": `
export async function up(db) {
  await db.schema.createTable("tags").addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("note_id", "integer", (c) => c.notNull().references("notes.id").onDelete("cascade")).execute();
}
export async function down(db) { await db.schema.dropTable("tags").execute(); }`,
    });
    const db = asSqlite(storage);
    await migrate(db, migrationsDir, backupDir);
    await seedNotes(db, 3);
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
});
