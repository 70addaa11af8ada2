// db:restore, its drill, and migrate --dry-run, as real processes against real files.
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { loadConfig } from "../src/config.ts";
import { parseDatabaseUrl } from "../src/db/postgres/url.ts";
import { takeBackup } from "../src/db/sqlite/snapshot.ts";
import { type EngineName, loadEngine } from "../src/db/storage.ts";
import { describeEngines, engineEnv } from "./engines.ts";
import { cleanupAfterEach, migrationsWith, runNode, type ServiceChild, startService } from "./helpers.ts";

const { tempDir, track, run, defer } = cleanupAfterEach();

async function setup(engine: EngineName = "sqlite") {
  const dir = tempDir();
  const env = await engineEnv(engine, dir);
  const databasePath = path.join(dir, "data", "app.db");
  const backupDir = path.join(dir, "backups");
  return { dir, databasePath, backupDir, env };
}

/** The engine's own view of the database named by `env`: a Storage, closed after the test. */
async function openLive(env: Record<string, string>) {
  const config = loadConfig({ ...env, LOG_LEVEL: "silent" });
  const engine = await loadEngine(config);
  const storage = await engine.open();
  defer(() => storage.close());
  return { engine, storage };
}

/** What "touching nothing live" is checked against: SQLite's files and bytes, or PostgreSQL's rows. */
async function liveState(engine: EngineName, env: Record<string, string>) {
  if (engine === "sqlite") return snapshot(env.DATABASE_PATH!);
  const { storage } = await openLive(env);
  const notes = await storage.kysely.selectFrom("notes").selectAll().orderBy("id").execute();
  const record = await storage.kysely.selectFrom("schema_migrations").selectAll().orderBy("name").execute();
  await storage.close();
  return { notes, record };
}

/** Titles in a backup file, read through a scratch copy the engine makes and drops. */
async function titlesIn(env: Record<string, string>, backupPath: string, dir: string) {
  const { engine } = await openLive(env);
  const backup = listBackups(path.dirname(backupPath)).find((b) => b.path === backupPath)!;
  const scratch = await engine.openScratch(backup, fs.mkdtempSync(path.join(dir, "scratch-")));
  try {
    return (await scratch.storage.kysely.selectFrom("notes").select("title").orderBy("id").execute()).map(
      (r) => r.title,
    );
  } finally {
    await scratch.dispose();
  }
}

const db = (args: string[], env: Record<string, string>) => run("scripts/db.ts", args, env);

async function serve(env: Record<string, string>): Promise<ServiceChild> {
  return track(await startService(env));
}

async function postNote(service: ServiceChild, title: string) {
  const res = await fetch(`http://127.0.0.1:${service.port}/api/notes`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
  expect(res.status).toBe(201);
}

async function titles(service: ServiceChild): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${service.port}/api/notes?limit=100`);
  return ((await res.json()) as { items: { title: string }[] }).items.map((n) => n.title).reverse();
}

async function stop(service: ServiceChild) {
  service.process.kill("SIGTERM");
  expect((await service.exited).code).toBe(0);
}

/** The database's files and their bytes: what "touching nothing live" is checked against. */
function snapshot(databasePath: string) {
  const dir = path.dirname(databasePath);
  return Object.fromEntries(
    fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f)).toString("base64")]),
  );
}

describeEngines("db:restore", (engine) => {
  it("puts the backup in place, keeps the old database, and the service then serves the restored data", async () => {
    const { dir, databasePath, backupDir, env } = await setup(engine);
    const first = await serve(env);
    await postNote(first, "kept");
    const backup = await db(["backup"], env);
    expect(backup.code).toBe(0);
    await postNote(first, "after the backup");
    // Killed, not stopped: on SQLite, a -wal with the last note is left beside the database.
    first.process.kill("SIGKILL");
    await first.exited;
    if (engine === "sqlite") expect(fs.existsSync(`${databasePath}-wal`)).toBe(true);

    const restore = await db(["restore", "--latest"], env);
    expect(restore.stderr).toBe("");
    expect(restore.code).toBe(0);
    const previous = listBackups(backupDir).find((b) => b.kind === "pre-restore")!;
    if (engine === "sqlite") {
      expect(restore.out).toEqual([
        `verified  ${backup.out[0]} (integrity_check, foreign_key_check)`,
        `kept      ${previous.path} (the database as it was)`,
        `removed   ${databasePath}-wal`,
        `removed   ${databasePath}-shm`,
        `restored  ${databasePath} from ${path.basename(backup.out[0]!)}`,
      ]);
      expect(fs.statSync(databasePath).mode & 0o777).toBe(0o600);
      expect(fs.readdirSync(path.dirname(databasePath))).toEqual(["app.db"]);
    } else {
      const { engine: live } = await openLive(env);
      expect(restore.out).toEqual([
        `verified  ${backup.out[0]} (pg_restore (every entry read))`,
        `kept      ${previous.path} (the database as it was)`,
        `restored  ${live.target} from ${path.basename(backup.out[0]!)}`,
      ]);
      const { password } = parseDatabaseUrl(env.DATABASE_URL!) as { password: string };
      expect(restore.out.join("\n")).not.toContain(password);
    }

    const second = await serve(env);
    expect(await titles(second)).toEqual(["kept"]);
    await stop(second);

    // The pre-restore backup holds what the restore replaced, the last commit included.
    expect(await titlesIn(env, previous.path, dir)).toEqual(["kept", "after the backup"]);
  });

  it("refuses while the service runs, saying how to stop it, and changes nothing", async () => {
    const { databasePath, env } = await setup(engine);
    const service = await serve(env);
    await postNote(service, "live");
    const backup = (await db(["backup"], env)).out[0]!;
    await postNote(service, "newer");

    const restore = await db(["restore", backup], env);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toMatch(
      engine === "sqlite"
        ? /is open in another process, most likely the running service: stop it first/
        : /other session\(s\) connected \(.*\), most likely the running service: stop it first/,
    );
    expect(restore.stderr).toContain("Nothing was changed.");
    expect(restore.stderr.trim().split("\n")).toHaveLength(1);
    expect(await titles(service)).toEqual(["live", "newer"]);
    if (engine === "sqlite") {
      expect(fs.readdirSync(path.dirname(databasePath)).filter((f) => f.includes("tmp"))).toEqual([]);
    }
    await stop(service);
  });

  it("refuses a truncated backup before touching anything", async () => {
    const { dir, backupDir, env } = await setup(engine);
    const service = await serve(env);
    for (let i = 0; i < 50; i++) await postNote(service, `note ${i} ${"x".repeat(150)}`);
    await stop(service);
    const good = (await db(["backup", "--json"], env)).stdout[0] as {
      backup: { path: string; sizeBytes: number };
    };
    const truncated = path.join(dir, `truncated${path.extname(good.backup.path)}`);
    fs.writeFileSync(
      truncated,
      fs.readFileSync(good.backup.path).subarray(0, Math.floor(good.backup.sizeBytes / 2)),
    );
    const before = await liveState(engine, env);

    const restore = await db(["restore", truncated], env);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toMatch(new RegExp(`backup ${truncated} .*Refused: nothing was changed\\.`));
    expect(await liveState(engine, env)).toEqual(before);
    expect(listBackups(backupDir).map((b) => b.kind)).toEqual(["manual"]);
  });
});

describe("db:restore on SQLite", () => {
  it("replaces a corrupt database, keeping its bytes aside under a name no restore takes", async () => {
    const { databasePath, backupDir, env } = await setup();
    const service = await serve(env);
    await postNote(service, "good");
    await stop(service);
    takeBackup({ databasePath, backupDir, kind: "manual" });
    fs.writeFileSync(databasePath, "this is not a database\n".repeat(200));

    // What the service says, and the command it suggests, works.
    const refused = track(runNode("src/main.ts", [], { ...env, PORT: "0" }));
    expect((await refused.exited).code).toBe(1);
    expect(refused.stderr()).toContain("restore it with: npm run db:restore -- --latest");

    const restore = await db(["restore", "--latest"], env);
    expect(restore.code).toBe(0);
    const aside = fs.readdirSync(backupDir).find((f) => f.endsWith("-unreadable.db"))!;
    expect(restore.out).toContain(
      `kept      ${path.join(backupDir, aside)} (the old file, unreadable by SQLite)`,
    );
    expect(fs.readFileSync(path.join(backupDir, aside), "utf8")).toContain("this is not a database");
    expect(listBackups(backupDir).map((b) => b.kind)).toEqual(["manual"]);
    const again = await serve(env);
    expect(await titles(again)).toEqual(["good"]);
    await stop(again);
  });

  it("explains its usage with exit code 2", async () => {
    const { env } = await setup();
    const result = await db(["restore"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("restore takes a backup file or --latest");
  });
});

describeEngines("rehearsals on a scratch copy", (engine) => {
  const extension = engine === "sqlite" ? "db" : "dump";

  it("db:restore --drill restores, migrates and verifies the newest backup, and touches nothing live", async () => {
    const { dir, backupDir, env } = await setup(engine);
    const service = await serve(env);
    await postNote(service, "in the backup");
    expect((await db(["backup"], env)).code).toBe(0);
    await postNote(service, "only live");
    await stop(service);
    // A migration the backup does not have yet: the drill applies it to its copy only.
    const migrationsDir = migrationsWith(dir, {
      "0002_add_tags.ts":
        'export async function up(db) { await db.schema.alterTable("notes").addColumn("tags", "text").execute(); }\n',
    });
    const live = await liveState(engine, env);
    const backups = fs.readdirSync(backupDir).sort();

    const drill = await db(["restore", "--drill"], { ...env, MIGRATIONS_DIR: migrationsDir });
    expect(drill.stderr).not.toMatch(/error/i);
    expect(drill.code).toBe(0);
    expect(drill.out).toContain("migrated  0002_add_tags");
    expect(drill.out).toContain(
      engine === "sqlite"
        ? "verified  integrity_check ok, foreign_key_check ok"
        : "verified  pg_dump (every row read) ok",
    );
    expect(drill.out.find((l) => l.startsWith("notes"))).toMatch(/^notes\s+1\s+2$/);
    expect(drill.out.find((l) => l.startsWith("schema_migrations"))).toMatch(/^schema_migrations\s+2\s+1$/);
    expect(drill.out.at(-1)).toBe("drill passed; scratch copy deleted, nothing live touched");
    expect(await liveState(engine, env)).toEqual(live);
    expect(fs.readdirSync(backupDir).sort()).toEqual(backups);

    // A backup the current migrations cannot bring up to date fails the drill.
    fs.writeFileSync(
      path.join(migrationsDir, "0003_broken.ts"),
      'export async function up() { throw new Error("nope"); }\n',
    );
    const failed = await db(["restore", "--drill"], { ...env, MIGRATIONS_DIR: migrationsDir });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(
      new RegExp(
        `drill FAILED: .*-manual\\.${extension} restores, but the migrations fail on it: migration 0003_broken failed: nope`,
      ),
    );
    expect(await liveState(engine, env)).toEqual(live);
    expect(fs.readdirSync(backupDir).sort()).toEqual(backups);
  });

  it("migrate --dry-run applies pending migrations to a snapshot only, and reports a failure", async () => {
    const { dir, backupDir, env } = await setup(engine);
    const service = await serve(env);
    await postNote(service, "live");
    await stop(service);
    const live = await liveState(engine, env);
    const target = await loadEngine(loadConfig(env));

    const good = migrationsWith(dir, {
      "0002_add_tags.ts":
        'export async function up(db) { await db.schema.alterTable("notes").addColumn("tags", "text").execute(); }\n',
    });
    const ok = await run("scripts/migrate.ts", ["up", "--dry-run"], { ...env, MIGRATIONS_DIR: good });
    expect(ok.code).toBe(0);
    expect(ok.out).toEqual([
      "ok       0002_add_tags",
      `dry run: 1 migration(s) apply cleanly to a snapshot of ${target.target}; it was not changed`,
    ]);
    expect(await liveState(engine, env)).toEqual(live);

    fs.writeFileSync(
      path.join(good, "0003_broken.ts"),
      'export async function up() { throw new Error("nope"); }\n',
    );
    const bad = await run("scripts/migrate.ts", ["up", "--dry-run", "--json"], {
      ...env,
      MIGRATIONS_DIR: good,
    });
    expect(bad.code).toBe(1);
    expect(bad.stdout[0]).toMatchObject({
      ok: false,
      error: expect.stringContaining("migration 0003_broken failed: nope"),
    });
    expect(await liveState(engine, env)).toEqual(live);
    expect(fs.existsSync(backupDir) ? fs.readdirSync(backupDir) : []).toEqual([]);

    const status = await run("scripts/migrate.ts", ["status"], { ...env, MIGRATIONS_DIR: good });
    expect(status.out.at(-1)).toBe("1 applied, 2 pending");
  });
});
