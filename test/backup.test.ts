// Backups of a live database: consistency under concurrent writes, crash safety, retention, and the
// db:backup / db:list / db:verify / db:checkpoint commands as real processes.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { type BackupKind, backupFileName, listBackups } from "../src/backups/files.ts";
import { pruneBackups } from "../src/backups/retention.ts";
import { runMigrations } from "../src/db/migrator.ts";
import type { SqliteStorage } from "../src/db/sqlite/engine.ts";
import { takeBackup, takeOnlineBackup, verifyDatabaseFile } from "../src/db/sqlite/snapshot.ts";
import {
  cleanupAfterEach,
  makeTempDir,
  openSqliteStorage,
  ROOT,
  runNode,
  silentLogger,
  testConfig,
} from "./helpers.ts";

const { defer, track, run } = cleanupAfterEach();

/** A migrated database in a fresh temporary folder, and the env that points the CLI at it. */
async function setup() {
  const dir = makeTempDir();
  defer(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = testConfig(dir);
  const db = await openSqliteStorage(config);
  await runMigrations({
    storage: db,
    migrationsDir: config.migrationsDir,
    backupDir: config.backupDir,
    logger: silentLogger,
  });
  defer(() => db.close());
  const env = { DATABASE_PATH: config.databasePath, BACKUP_DIR: config.backupDir };
  return { dir, config, db, env };
}

function insertNotes(db: SqliteStorage, count: number, title = "note") {
  const insert = db.sqlite.prepare(
    "INSERT INTO notes (title, body, created_at, updated_at) VALUES (?, '', ?, ?)",
  );
  const now = new Date().toISOString();
  db.sqlite.transaction(() => {
    for (let i = 0; i < count; i++) insert.run(`${title} ${i}`, now, now);
  })();
}

function noteIds(file: string): number[] {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return db.prepare("SELECT id FROM notes ORDER BY id").pluck().all() as number[];
  } finally {
    db.close();
  }
}

const db = (args: string[], env: Record<string, string>) => run("scripts/db.ts", args, env);

// A writer in another process, committing one row per transaction as fast as it can and printing
// the id of each row once its COMMIT has returned.
const WRITER = `
import Database from ${JSON.stringify(path.join(ROOT, "node_modules/better-sqlite3/lib/index.js"))};
const db = new Database(process.argv[2], { timeout: 5000 });
db.pragma("journal_mode = WAL");
db.pragma("synchronous = NORMAL");
const insert = db.prepare("INSERT INTO notes (title, body, created_at, updated_at) VALUES ('w', '', 'x', 'x')");
for (;;) {
  const { lastInsertRowid } = insert.run();
  process.stdout.write(JSON.stringify({ msg: "committed", id: Number(lastInsertRowid) }) + "\\n");
  await new Promise((resolve) => setImmediate(resolve));
}
`;

describe("db:backup", () => {
  it("takes a consistent, verified backup while another process writes continuously", async () => {
    const { dir, config, env } = await setup();
    const script = path.join(dir, "writer.mjs");
    fs.writeFileSync(script, WRITER);
    const writer = track(runNode(script, [config.databasePath], {}));
    await writer.waitForLog((l) => l.msg === "committed" && (l.id as number) >= 200);
    // Every row acknowledged before the backup starts must be in it.
    const committedBefore = Math.max(...writer.logs.map((l) => l.id as number));

    const { code, out } = await db(["backup"], env);
    const committedDuring = Math.max(...writer.logs.map((l) => l.id as number));
    writer.process.kill("SIGKILL");
    await writer.exited;

    expect(code).toBe(0);
    const [file] = out;
    expect(file).toMatch(/app-\d{8}T\d{9}Z-manual\.db$/);
    expect(committedDuring).toBeGreaterThan(committedBefore); // the writer was not held up
    const ids = noteIds(file!);
    expect(ids.filter((id) => id <= committedBefore)).toEqual(
      Array.from({ length: committedBefore }, (_, i) => i + 1),
    );
    expect(verifyDatabaseFile(file!)).toMatchObject({ ok: true, integrity: ["ok"] });
    expect(fs.statSync(file!).mode & 0o777).toBe(0o600);
  });

  it("prints JSON with --json, and refuses a missing database without creating it", async () => {
    const { env, config } = await setup();
    const json = await db(["backup", "--json"], env);
    expect(json.code).toBe(0);
    expect(json.stdout[0]).toMatchObject({
      backup: { kind: "manual", path: expect.any(String) },
      pruned: [],
    });
    expect(listBackups(config.backupDir).map((b) => b.path)).toEqual([(json.stdout[0] as any).backup.path]);

    const missing = path.join(path.dirname(config.databasePath), "missing.db");
    const result = await db(["backup"], { ...env, DATABASE_PATH: missing });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`no database at ${missing}`);
    expect(fs.existsSync(missing)).toBe(false);
  });

  it("leaves nothing that db:list or restore would take when killed in the middle of a backup", async () => {
    const { config, db: live, env } = await setup();
    // Big enough that the copy and its check take a while: the kill lands during them.
    live.sqlite.exec("CREATE TABLE filler (b BLOB)");
    const fill = live.sqlite.prepare("INSERT INTO filler VALUES (randomblob(1048576))");
    for (let i = 0; i < 48; i++) fill.run();
    live.sqlite.pragma("wal_checkpoint(TRUNCATE)");
    fs.mkdirSync(config.backupDir, { recursive: true });

    const child = track(runNode("scripts/db.ts", ["backup"], env));
    const started = new Promise<string>((resolve) => {
      const watcher = fs.watch(config.backupDir, (_event, name) => {
        if (name?.endsWith(".tmp")) {
          watcher.close();
          resolve(name);
        }
      });
      defer(() => watcher.close());
    });
    const tmp = await started;
    child.process.kill("SIGKILL");
    expect(await child.exited).toEqual({ code: null, signal: "SIGKILL" });

    // The partial file is there (proof the kill landed mid-backup) but is not a backup.
    expect(fs.existsSync(path.join(config.backupDir, tmp))).toBe(true);
    expect(listBackups(config.backupDir)).toEqual([]);
    const list = await db(["list", "--json"], env);
    expect(list.stdout[0]).toEqual([]);
    await live.close();
    const restore = await db(["restore", "--latest"], env);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toContain("no backup of");
  });
});

describe("takeOnlineBackup", () => {
  it("snapshots in a worker thread while the service's connection keeps writing", async () => {
    const { config, db: live } = await setup();
    insertNotes(live, 2000, "before");
    const before = noteIds(config.databasePath).length;
    let done = false;
    const copying = takeOnlineBackup({
      databasePath: config.databasePath,
      backupDir: config.backupDir,
      kind: "scheduled",
    }).finally(() => {
      done = true;
    });
    // The event loop keeps turning, and the service keeps writing through its connection, while the
    // copy runs: a snapshot on this thread would finish before the first turn.
    let writesDuringCopy = 0;
    while (!done) {
      await new Promise((resolve) => setImmediate(resolve));
      if (done) break;
      insertNotes(live, 1, "during");
      writesDuringCopy++;
    }
    const backup = await copying;
    expect(writesDuringCopy).toBeGreaterThan(0);
    const ids = noteIds(backup.path);
    expect(ids.length).toBeGreaterThanOrEqual(before);
    expect(ids.slice(0, before)).toEqual(Array.from({ length: before }, (_, i) => i + 1));
    expect(verifyDatabaseFile(backup.path).ok).toBe(true);
    // A self-contained file: rollback journal mode, nothing needed beside it.
    expect(fs.readFileSync(backup.path).subarray(18, 20)).toEqual(Buffer.from([1, 1]));
    expect(listBackups(config.backupDir).map((b) => b.kind)).toEqual(["scheduled"]);
  });

  it("reports the copy's growth against the database's size, ending at the backup's size", async () => {
    const { config, db: live } = await setup();
    live.sqlite.exec("CREATE TABLE filler (b BLOB)");
    const fill = live.sqlite.prepare("INSERT INTO filler VALUES (randomblob(1048576))");
    for (let i = 0; i < 64; i++) fill.run();
    live.sqlite.pragma("wal_checkpoint(TRUNCATE)");
    const reports: [number, number | undefined][] = [];
    const backup = await takeOnlineBackup({
      databasePath: config.databasePath,
      backupDir: config.backupDir,
      kind: "manual",
      onProgress: (written, expected) => reports.push([written, expected]),
    });
    expect(reports.length).toBeGreaterThan(0);
    expect(reports.every(([, expected]) => expected === fs.statSync(config.databasePath).size)).toBe(true);
    const written = reports.map(([w]) => w);
    expect(written).toEqual([...written].sort((a, b) => a - b));
    expect(written.at(-1)).toBe(backup.sizeBytes);
  });

  it("removes its partial file when aborted", async () => {
    const { config, db: live } = await setup();
    insertNotes(live, 2000);
    const abort = new AbortController();
    const copying = takeOnlineBackup({
      databasePath: config.databasePath,
      backupDir: config.backupDir,
      kind: "scheduled",
      signal: abort.signal,
    });
    abort.abort();
    await expect(copying).rejects.toThrow();
    expect(fs.readdirSync(config.backupDir)).toEqual([]);
  });
});

describe("retention", () => {
  const day = 86_400_000;
  const now = new Date("2026-11-25T12:00:00.000Z");

  async function backupsAt(kinds: [BackupKind, number][]) {
    const { config } = await setup();
    for (const [kind, daysAgo] of kinds) {
      takeBackup({
        databasePath: config.databasePath,
        backupDir: config.backupDir,
        kind,
        now: new Date(now.getTime() - daysAgo * day),
      });
    }
    return config;
  }

  // "scheduled@3": a backup's kind and age in days.
  const label = (b: { kind: string; createdAt: Date }) =>
    `${b.kind}@${Math.round((now.getTime() - b.createdAt.getTime()) / day)}`;
  const names = (config: { databasePath: string; backupDir: string }) =>
    listBackups(config.backupDir).map(label);

  it("keeps the newest BACKUP_KEEP backups and always the newest pre-migration one", async () => {
    const config = await backupsAt([
      ["pre-migration", 9],
      ["pre-migration", 8],
      ["manual", 7],
      ["scheduled", 6],
      ["scheduled", 5],
      ["pre-restore", 4],
      ["scheduled", 3],
      ["manual", 2],
      ["scheduled", 1],
    ]);
    const removed = pruneBackups({ ...config, database: "app", keep: 3, maxAgeDays: null, now });
    expect(names(config)).toEqual(["scheduled@1", "manual@2", "scheduled@3", "pre-migration@8"]);
    expect(removed.map(label).sort()).toEqual(
      ["manual@7", "pre-migration@9", "pre-restore@4", "scheduled@5", "scheduled@6"].sort(),
    );
  });

  it("drops backups older than BACKUP_MAX_AGE_DAYS even within BACKUP_KEEP", async () => {
    const config = await backupsAt([
      ["scheduled", 30],
      ["pre-migration", 20],
      ["scheduled", 10],
      ["scheduled", 6],
      ["manual", 1],
    ]);
    pruneBackups({ ...config, database: "app", keep: 10, maxAgeDays: 7, now });
    expect(names(config)).toEqual(["manual@1", "scheduled@6", "pre-migration@20"]);
  });

  it("leaves other databases' backups alone and removes only day-old temporary files", async () => {
    const config = await backupsAt([
      ["manual", 2],
      ["manual", 1],
    ]);
    const other = path.join(
      config.backupDir,
      backupFileName({
        database: "other",
        kind: "manual",
        createdAt: new Date(now.getTime() - 5 * day),
        extension: ".db",
      }),
    );
    fs.copyFileSync(listBackups(config.backupDir)[0]!.path, other);
    const stale = path.join(config.backupDir, ".app-x-manual.db.123.tmp");
    const fresh = path.join(config.backupDir, ".app-y-manual.db.456.tmp");
    fs.writeFileSync(stale, "partial");
    fs.writeFileSync(fresh, "partial");
    // Ages on the filesystem's clock (the one retention measures them by), whatever the date.
    const written = fs.statSync(fresh).mtimeMs;
    fs.utimesSync(stale, new Date(written - 2 * day), new Date(written - 2 * day));
    fs.utimesSync(fresh, new Date(written - day / 24), new Date(written - day / 24));

    pruneBackups({ ...config, database: "app", keep: 1, maxAgeDays: null, now });
    expect(fs.readdirSync(config.backupDir).sort()).toEqual(
      [".app-y-manual.db.456.tmp", path.basename(other), listBackups(config.backupDir)[0]!.file].sort(),
    );
    expect(names(config).filter((n) => n.startsWith("manual"))).toEqual(["manual@1", "manual@5"]);
  });

  it("keeps a temporary file being written when the process clock runs a year ahead of the disk's", async () => {
    const config = await backupsAt([["manual", 1]]);
    const inProgress = path.join(config.backupDir, ".app-20261124T120000000Z-manual.db.789.tmp");
    fs.writeFileSync(inProgress, "being written");
    pruneBackups({
      ...config,
      database: "app",
      keep: 1,
      maxAgeDays: null,
      now: new Date(Date.now() + 400 * day),
    });
    expect(fs.existsSync(inProgress)).toBe(true);
  });

  it("is applied by db:backup", async () => {
    const { config, env } = await setup();
    for (let i = 0; i < 3; i++)
      takeBackup({ ...config, kind: "scheduled", now: new Date(Date.now() - (i + 1) * 1000) });
    const result = await db(["backup", "--json"], { ...env, BACKUP_KEEP: "2" });
    expect(result.code).toBe(0);
    const out = result.stdout[0] as any;
    expect(out.pruned).toHaveLength(2);
    expect(listBackups(config.backupDir).map((b) => b.path)).toEqual([
      out.backup.path,
      expect.stringMatching(/scheduled\.db$/),
    ]);
  });
});

describe("db:list, db:verify, db:checkpoint", () => {
  it("lists backups newest first with size, time and kind", async () => {
    const { config, env } = await setup();
    takeBackup({ ...config, kind: "pre-migration", label: "0002_x", now: new Date("2026-11-24T10:00:00Z") });
    takeBackup({ ...config, kind: "manual", now: new Date("2026-11-25T10:00:00Z") });
    const { code, out } = await db(["list"], env);
    expect(code).toBe(0);
    expect(out[0]).toMatch(/^created\s+kind\s+size\s+file$/);
    expect(out[1]).toMatch(
      /^2026-11-25 10:00:00Z\s+manual\s+\d+\.\d KiB\s+app-20261125T100000000Z-manual\.db$/,
    );
    expect(out[2]).toMatch(/pre-migration\s+.*app-20261124T100000000Z-pre-migration-0002_x\.db$/);
    expect(out[3]).toContain("2 backup(s)");
  });

  it("verifies the live database and a backup, and fails a truncated copy and a dangling reference", async () => {
    const { dir, config, db: live, env } = await setup();
    insertNotes(live, 500);
    const ok = await db(["verify"], env);
    expect(ok.code).toBe(0);
    expect(ok.out[0]).toBe(`ok ${config.databasePath}`);

    const backup = takeBackup({ ...config, kind: "manual" });
    expect((await db(["verify", backup.path], env)).code).toBe(0);

    const truncated = path.join(dir, "truncated.db");
    fs.writeFileSync(truncated, fs.readFileSync(backup.path).subarray(0, fs.statSync(backup.path).size / 2));
    const bad = await db(["verify", truncated], env);
    expect(bad.code).toBe(1);

    const orphan = path.join(dir, "orphan.db");
    const o = new BetterSqlite3(orphan);
    o.pragma("foreign_keys = OFF");
    o.exec(
      "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p INTEGER REFERENCES p(id)); INSERT INTO c VALUES (7)",
    );
    o.close();
    const fk = await db(["verify", orphan, "--json"], env);
    expect(fk.code).toBe(1);
    expect(fk.stdout[0]).toMatchObject({
      ok: false,
      integrity: ["ok"],
      foreignKeys: [{ table: "c", parent: "p" }],
    });
  });

  it("checkpoints the WAL while another connection keeps the database open, and reports the pages", async () => {
    const { config, db: live, env } = await setup();
    live.sqlite.pragma("wal_autocheckpoint = 0");
    insertNotes(live, 300);
    expect(fs.statSync(`${config.databasePath}-wal`).size).toBeGreaterThan(0);
    const { code, stdout } = await db(["checkpoint", "--json"], env);
    expect(code).toBe(0);
    const result = stdout[0] as any;
    expect(result.busy).toBe(false);
    expect(result.walPages).toBeGreaterThan(0);
    expect(result.checkpointedPages).toBe(result.walPages);
    expect(result.walBytesAfter).toBe(0);
    expect(fs.statSync(`${config.databasePath}-wal`).size).toBe(0);
    expect(noteIds(config.databasePath)).toHaveLength(300);
  });
});
