import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { openSqlite } from "../src/db/sqlite/open.ts";
import { takeBackup } from "../src/db/sqlite/snapshot.ts";
import { StorageStartupError } from "../src/db/storage.ts";
import { cleanupAfterEach } from "./helpers.ts";

const { defer, tempDir } = cleanupAfterEach();

function setup() {
  const dir = tempDir();
  const file = path.join(dir, "deeply", "nested", "app.db");
  return { dir, file, backupDir: path.join(dir, "backups") };
}

function openAt(file: string, backupDir: string) {
  const db = openSqlite({ path: file, backupDir, busyTimeoutMs: 1234 });
  defer(() => db.close());
  return db;
}

function startupError(run: () => unknown): StorageStartupError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(StorageStartupError);
    expect((error as Error).message).not.toContain("\n");
    return error as StorageStartupError;
  }
  throw new Error("expected a StorageStartupError");
}

describe("openSqlite", () => {
  it("creates missing folders and opens the file in WAL mode with the production PRAGMAs", () => {
    const { file, backupDir } = setup();
    const db = openAt(file, backupDir);
    const pragma = (name: string) => db.sqlite.pragma(name, { simple: true });
    expect(fs.statSync(file).isFile()).toBe(true);
    expect(pragma("journal_mode")).toBe("wal");
    expect(pragma("synchronous")).toBe(1); // NORMAL
    expect(pragma("foreign_keys")).toBe(1);
    expect(pragma("busy_timeout")).toBe(1234);
    expect(pragma("journal_size_limit")).toBe(67_108_864);
    expect(pragma("cache_size")).toBe(-16_000);
    expect(pragma("temp_store")).toBe(2); // MEMORY
    expect(pragma("trusted_schema")).toBe(0);
    // WAL is a property of the file: a second connection sees it too.
    const other = new BetterSqlite3(file, { readonly: true });
    expect(other.pragma("journal_mode", { simple: true })).toBe("wal");
    other.close();
  });

  it("makes the database, its -wal and -shm readable by the owner only, in a 0700 folder", () => {
    const { file, backupDir } = setup();
    const db = openAt(file, backupDir);
    db.sqlite.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      expect((fs.statSync(f).mode & 0o777).toString(8), f).toBe("600");
    }
    expect((fs.statSync(path.dirname(file)).mode & 0o777).toString(8)).toBe("700");
  });

  it("keeps data across close and reopen, and close leaves no -wal or -shm", () => {
    const { file, backupDir } = setup();
    const db = openSqlite({ path: file, backupDir, busyTimeoutMs: 100 });
    db.sqlite.exec("CREATE TABLE t (x); INSERT INTO t VALUES ('kept')");
    expect(fs.existsSync(`${file}-wal`)).toBe(true);
    db.close();
    db.close(); // twice is harmless
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    expect(fs.existsSync(`${file}-shm`)).toBe(false);
    const again = openAt(file, backupDir);
    expect(again.sqlite.prepare("SELECT x FROM t").pluck().get()).toBe("kept");
  });

  it("gives Kysely the columns' SQL names, and leaves the keys inside values alone", async () => {
    const { file, backupDir } = setup();
    const db = openAt(file, backupDir);
    db.sqlite.exec(
      `CREATE TABLE schema_migrations (name TEXT, applied_at TEXT); INSERT INTO schema_migrations VALUES ('a', '{"snake_key":1}')`,
    );
    expect(await db.kysely.selectFrom("schema_migrations").selectAll().execute()).toEqual([
      { name: "a", applied_at: '{"snake_key":1}' },
    ]);
  });

  // SQLite runs its automatic checkpoint only when a statement steps to its end: a query layer that
  // stopped at the first row (better-sqlite3's get() on an INSERT ... RETURNING) would let the WAL
  // grow with every write until a reader or a restart paid for it (docs/performance.md).
  it("keeps the WAL bounded under a stream of writes through Kysely: automatic checkpoints run", async () => {
    const { file, backupDir } = setup();
    const db = openAt(file, backupDir);
    db.sqlite.exec(
      "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT, body TEXT, created_at TEXT, updated_at TEXT)",
    );
    const frameBytes = (db.sqlite.pragma("page_size", { simple: true }) as number) + 24;
    const checkpointEvery = db.sqlite.pragma("wal_autocheckpoint", { simple: true }) as number;
    const inserts = 3000;
    for (let i = 0; i < inserts; i++) {
      await db.kysely
        .insertInto("notes")
        .values({ title: `note ${i}`, body: "", created_at: "now", updated_at: "now" })
        .returningAll()
        .executeTakeFirstOrThrow();
    }
    // Each insert writes two pages (the table's last leaf and sqlite_sequence): without
    // checkpoints the WAL would hold them all.
    expect(inserts * 2).toBeGreaterThan(3 * checkpointEvery);
    expect(fs.statSync(`${file}-wal`).size).toBeLessThanOrEqual(32 + (checkpointEvery + 10) * frameBytes);
  });

  it("refuses a text file at DATABASE_PATH, names the newest backup and leaves the file untouched", () => {
    const { dir, file, backupDir } = setup();
    // A real backup of a database of the same name (another database's backups are not offered).
    const source = path.join(dir, "app.db");
    const s = new BetterSqlite3(source);
    s.exec("CREATE TABLE t (x)");
    s.close();
    const backup = takeBackup({ databasePath: source, backupDir, kind: "manual" });
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, "this is not a database, just some text\n".repeat(10));
    const before = fs.readFileSync(file);
    const error = startupError(() => openSqlite({ path: file, backupDir, busyTimeoutMs: 100 }));
    expect(error.message).toContain("is not a SQLite database");
    expect(error.message).toContain(backup.path);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
  });

  it("refuses a truncated database and says no backup exists", () => {
    const { file, backupDir } = setup();
    const db = openSqlite({ path: file, backupDir, busyTimeoutMs: 100 });
    db.sqlite.exec(
      "CREATE TABLE t (x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) INSERT INTO t SELECT randomblob(1000) FROM n",
    );
    db.close();
    fs.truncateSync(file, 8192);
    const error = startupError(() => openSqlite({ path: file, backupDir, busyTimeoutMs: 100 }));
    expect(error.message).toMatch(/is truncated: its header describes \d+ bytes but the file holds 8192/);
    expect(error.message).toContain(`No backup found in ${backupDir}`);
    expect(fs.statSync(file).size).toBe(8192);
  });

  it("refuses random bytes", () => {
    const { file, backupDir } = setup();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251)));
    expect(startupError(() => openSqlite({ path: file, backupDir, busyTimeoutMs: 100 })).message).toContain(
      "is not a SQLite database",
    );
  });

  it("refuses a directory at DATABASE_PATH and suggests a file inside it", () => {
    const { file, backupDir } = setup();
    fs.mkdirSync(file, { recursive: true });
    expect(startupError(() => openSqlite({ path: file, backupDir, busyTimeoutMs: 100 })).message).toBe(
      `DATABASE_PATH ${file} is a directory, not a database file. Fix: set DATABASE_PATH to a file inside it, such as ${path.join(file, "app.db")}.`,
    );
  });

  it("refuses to create a folder under a regular file, naming the problem", () => {
    const { dir, backupDir } = setup();
    fs.writeFileSync(path.join(dir, "blocker"), "");
    const error = startupError(() =>
      openSqlite({ path: path.join(dir, "blocker", "app.db"), backupDir, busyTimeoutMs: 100 }),
    );
    expect(error.message).toMatch(
      /cannot create the database folder .*blocker: a file stands where a folder should be/,
    );
  });
});
