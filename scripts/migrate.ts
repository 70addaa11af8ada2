// npm run migrate | migrate:status | migrate:down | migrate:new -- <name>
// Applies, lists or reverts migrations on DATABASE_PATH, or writes a new migration from a template.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { dryRunMigrations } from "../src/backups/rehearsal.ts";
import { type Config, loadConfig } from "../src/config.ts";
import {
  findMigrations,
  MigrationError,
  readMigrationStatus,
  revertLastMigration,
  runMigrations,
} from "../src/db/migrator.ts";
import { loadEngine, type StorageEngine } from "../src/db/storage.ts";
import { createLogger, type Logger } from "../src/logger.ts";
import { exitWithStartupError } from "../src/startup-error.ts";

const USAGE = `usage: node scripts/migrate.ts <up|status|down|new> [--json] [--dry-run] [name]
  up       apply every pending migration in one transaction (backup first if the database holds data)
  up --dry-run  apply them to a fresh snapshot in a scratch folder instead; nothing live changes
  status   list applied and pending migrations
  down     revert the most recently applied migration (backup first)
  new NAME write migrations/NNNN_NAME.ts from the template`;

const TEMPLATE = `import type { Kysely } from "kysely";
import type { MigrationContext } from "../src/db/migrator.ts";

// Runs inside the migrator's one transaction (on SQLite with foreign keys off, checked before
// commit): do not open transactions here. One file for every engine: the context says which one
// runs it (\`engine\`) and how to declare an id column (\`ids\`). Use snake_case names, as in SQL.
// On PostgreSQL, statements refused in a transaction (CREATE INDEX CONCURRENTLY) need a step of their
// own, and with several instances, add now and drop in a later release: see docs/engines.md.
export async function up(db: Kysely<any>, { ids }: MigrationContext): Promise<void> {
  await db.schema.createTable("example").addColumn("id", ids.type, ids.primaryKey).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("example").execute();
}
`;

process.umask(0o077);
const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { json: { type: "boolean" }, "dry-run": { type: "boolean" } },
});
const [command, name] = positionals;

try {
  const config = loadConfig();
  if (command === "new") {
    if (!name || !/^[a-z0-9_]+$/.test(name)) {
      console.error(
        "migrate:new needs a name of lowercase letters, digits and underscores: npm run migrate:new -- add_tags",
      );
      process.exit(2);
    }
    const last = findMigrations(config.migrationsDir).at(-1);
    const next = String(Number(last?.name.slice(0, 4) ?? "0") + 1).padStart(4, "0");
    const file = path.join(config.migrationsDir, `${next}_${name}.ts`);
    fs.writeFileSync(file, TEMPLATE, { flag: "wx", mode: 0o644 });
    console.log(`created ${path.relative(process.cwd(), file)}`);
    process.exit(0);
  }
  if (command !== "up" && command !== "status" && command !== "down") {
    console.error(USAGE);
    process.exit(2);
  }

  // Logs go to stderr so stdout carries only the command's answer.
  const logger = createLogger(config, 2);
  const engine = await loadEngine(config, logger);
  if (values["dry-run"]) {
    if (command !== "up") {
      console.error("--dry-run goes with up: npm run migrate -- --dry-run");
      process.exit(2);
    }
    process.exit((await dryRun(engine, config, logger)) ? 0 : 1);
  }
  const storage = await engine.open();
  const options = {
    storage,
    migrationsDir: config.migrationsDir,
    backupDir: config.backupDir,
    logger,
    backupFirst: config.migrateBackup || ("off" as const),
  };
  try {
    if (command === "status") {
      const status = await readMigrationStatus(storage, findMigrations(config.migrationsDir));
      if (values.json) console.log(JSON.stringify(status));
      else {
        for (const m of status.applied) console.log(`applied  ${m}`);
        for (const m of status.pending) console.log(`pending  ${m}`);
        console.log(`${status.applied.length} applied, ${status.pending.length} pending`);
      }
    } else {
      const { names, backup } =
        command === "up" ? await runMigrations(options) : await revertLastMigration(options);
      const verb = command === "up" ? "applied" : "reverted";
      if (values.json) console.log(JSON.stringify({ [verb]: names, backup: backup?.path ?? null }));
      else {
        if (backup) console.log(`backup   ${backup.path}`);
        for (const m of names) console.log(`${verb.padEnd(8)} ${m}`);
        if (names.length === 0) console.log(command === "up" ? "nothing to apply" : "nothing to revert");
      }
    }
  } finally {
    await storage.close();
  }
} catch (error) {
  exitWithStartupError(error);
}

async function dryRun(engine: StorageEngine, config: Config, logger: Logger): Promise<boolean> {
  try {
    const { applied } = await dryRunMigrations({ ...config, engine, logger });
    if (values.json) console.log(JSON.stringify({ ok: true, applied }));
    else {
      for (const m of applied) console.log(`ok       ${m}`);
      console.log(
        applied.length === 0
          ? "dry run: nothing to apply"
          : `dry run: ${applied.length} migration(s) apply cleanly to a snapshot of ${engine.target}; it was not changed`,
      );
    }
    return true;
  } catch (error) {
    if (!(error instanceof MigrationError)) throw error;
    if (values.json) console.log(JSON.stringify({ ok: false, error: error.message }));
    else
      console.log(
        `dry run FAILED on a snapshot (since deleted); ${engine.target} was not changed:\n${error.message}`,
      );
    return false;
  }
}
