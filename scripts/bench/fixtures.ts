// Databases for the benchmark: the project's own schema (its migrations, through the SQLite engine),
// filled in one statement by a recursive CTE, which writes 1 GB in seconds rather than minutes.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { pino } from "pino";
import { findMigrations, runMigrations } from "../../src/db/migrator.ts";
import { createSqliteEngine } from "../../src/db/sqlite/engine.ts";

export interface FixtureOptions {
  file: string;
  notes: number;
  /** Length of each note's body; the title and timestamps add about 60 bytes. */
  bodyBytes: number;
  migrationsDir: string;
}

const silent = pino({ level: "silent" });

/** Creates a migrated database at `file` holding `notes` notes (ids 1..notes). */
export async function buildFixture({ file, notes, bodyBytes, migrationsDir }: FixtureOptions): Promise<void> {
  fs.rmSync(file, { force: true });
  const storage = await createSqliteEngine({
    databasePath: file,
    backupDir: path.join(path.dirname(file), "backups"),
    busyTimeoutMs: 2000,
  }).open();
  try {
    await runMigrations({
      storage,
      migrationsDir,
      backupDir: path.join(path.dirname(file), "backups"),
      logger: silent,
    });
  } finally {
    await storage.close();
  }
  if (notes === 0) return;
  // A rollback journal off and no fsync: a fixture that a crash would leave half-built is simply
  // built again (the cache only keeps files that were renamed into place).
  const raw = new BetterSqlite3(file);
  try {
    raw.pragma("journal_mode = OFF");
    raw.pragma("synchronous = OFF");
    const filler = crypto.randomBytes(Math.ceil((bodyBytes + 64) * 0.75)).toString("base64");
    raw
      .prepare(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < @notes)
         INSERT INTO notes (title, body, created_at, updated_at)
         SELECT 'note number ' || i, substr(@filler, 1 + (i % 64), @bodyBytes), @at, @at FROM n`,
      )
      .run({ notes, filler, bodyBytes, at: new Date(0).toISOString() });
    raw.pragma("journal_mode = WAL");
  } finally {
    raw.close();
  }
}

/**
 * A large fixture kept between runs in `cacheDir` (building 1 GB costs tens of seconds): its name
 * carries its size and the migrations it was built with, so a schema change builds a new one.
 */
export async function cachedFixture(
  cacheDir: string,
  options: Omit<FixtureOptions, "file">,
): Promise<{ file: string; built: boolean; ms: number }> {
  const schema = crypto
    .createHash("sha256")
    .update(
      findMigrations(options.migrationsDir)
        .map((m) => `${m.name}\n${fs.readFileSync(m.path, "utf8")}`)
        .join("\n"),
    )
    .digest("hex")
    .slice(0, 12);
  const file = path.join(cacheDir, `notes-${options.notes}x${options.bodyBytes}-${schema}.db`);
  if (fs.existsSync(file)) return { file, built: false, ms: 0 };
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  for (const stale of fs.readdirSync(cacheDir)) {
    if (stale.startsWith(`notes-${options.notes}x${options.bodyBytes}-`)) {
      fs.rmSync(path.join(cacheDir, stale), { force: true, recursive: true });
    }
  }
  const started = performance.now();
  const tmp = path.join(cacheDir, `.building-${process.pid}`, "fixture.db");
  try {
    await buildFixture({ ...options, file: tmp });
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(path.dirname(tmp), { recursive: true, force: true });
  }
  return { file, built: true, ms: performance.now() - started };
}
