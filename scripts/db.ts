// npm run db:backup | db:list | db:verify [-- <file>] | db:checkpoint | db:restore -- <file>|--latest|--drill
// Database maintenance from the command line, safe while the service runs (except restore, which
// refuses to). The answer goes to stdout (--json for machines), diagnostics to stderr.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { type Config, ConfigError, loadConfig } from "../src/config.ts";
import {
  BackupError,
  type BackupFile,
  findNewestBackup,
  listBackups,
  pruneBackups,
  takeBackup,
  verifyDatabaseFile,
} from "../src/db/backup.ts";
import { checkpointDatabase } from "../src/db/checkpoint.ts";
import { DrillError, runRestoreDrill } from "../src/db/drill.ts";
import { MigrationError } from "../src/db/migrator.ts";
import { RestoreError, restoreBackup } from "../src/db/restore.ts";
import { createLogger } from "../src/logger.ts";

const USAGE = `usage: node scripts/db.ts <command> [options]
  backup              take a verified backup now into BACKUP_DIR, then apply retention
  list                the backups, newest first
  verify [FILE]       integrity_check and foreign_key_check of the database (or of FILE)
  checkpoint          wal_checkpoint(TRUNCATE): fold the WAL into the database file
  restore FILE        put a backup in place of the database (the service must be stopped)
  restore --latest    the same with the newest backup
  restore --drill     restore the newest backup into a scratch file, migrate, verify, compare, delete
options: --json (machine-readable output)`;

// Exit codes: 0 done, 1 refused or failed (the message says why), 2 bad usage.
class UsageError extends Error {}
class CommandError extends Error {}

process.umask(0o077);

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    json: { type: "boolean", default: false },
    latest: { type: "boolean", default: false },
    drill: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
const [command, file, ...extra] = positionals;

try {
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}`);
  const config = loadConfig();
  const ok = await run(command, config);
  process.exit(ok ? 0 : 1);
} catch (error) {
  if (error instanceof UsageError) {
    console.error(`${error.message}\n${USAGE}`);
    process.exit(2);
  }
  const known = [CommandError, ConfigError, BackupError, RestoreError, DrillError, MigrationError].some(
    (t) => error instanceof t,
  );
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  console.error(`db ${command ?? ""}: ${known || !code ? message : `${code}: ${message}`}`);
  if (!known && !code) console.error((error as Error).stack);
  process.exit(1);
}

async function run(name: string | undefined, config: Config): Promise<boolean> {
  switch (name) {
    case "backup":
      return backup(config);
    case "list":
      return list(config);
    case "verify":
      return verify(config);
    case "checkpoint":
      return checkpoint(config);
    case "restore":
      return values.drill ? drill(config) : restore(config);
    default:
      throw new UsageError(name ? `unknown command ${name}` : "which command?");
  }
}

function requireDatabase({ databasePath }: Config): void {
  if (!fs.existsSync(databasePath)) {
    throw new CommandError(`no database at ${databasePath} (DATABASE_PATH)`);
  }
}

function backup(config: Config): boolean {
  requireDatabase(config);
  const started = performance.now();
  const taken = takeBackup({
    databasePath: config.databasePath,
    backupDir: config.backupDir,
    kind: "manual",
  });
  const pruned = pruneBackups({
    databasePath: config.databasePath,
    backupDir: config.backupDir,
    keep: config.backupKeep,
    maxAgeDays: config.backupMaxAgeDays,
  });
  if (values.json) {
    console.log(JSON.stringify({ backup: describe(taken), pruned: pruned.map(describe) }));
  } else {
    console.log(taken.path);
    console.error(
      `verified (integrity_check, foreign_key_check), ${formatBytes(taken.sizeBytes)} in ${Math.round(performance.now() - started)} ms`,
    );
    for (const old of pruned) console.error(`pruned ${old.file} (BACKUP_KEEP=${config.backupKeep})`);
  }
  return true;
}

function list(config: Config): boolean {
  const backups = listBackups(config.backupDir);
  if (values.json) {
    console.log(JSON.stringify(backups.map(describe)));
    return true;
  }
  if (backups.length === 0) {
    console.log(`no backups in ${config.backupDir}`);
    return true;
  }
  const rows = backups.map((b) => [
    b.createdAt
      .toISOString()
      .replace("T", " ")
      .replace(/\.\d+Z$/, "Z"),
    b.kind,
    formatBytes(b.sizeBytes),
    b.file,
  ]);
  printTable(["created", "kind", "size", "file"], rows);
  const policy = `BACKUP_KEEP=${config.backupKeep}${config.backupMaxAgeDays ? `, BACKUP_MAX_AGE_DAYS=${config.backupMaxAgeDays}` : ""}`;
  console.log(`${backups.length} backup(s) in ${config.backupDir} (${policy})`);
  return true;
}

function verify(config: Config): boolean {
  const target = file ? path.resolve(file) : config.databasePath;
  if (!file) requireDatabase(config);
  else if (!fs.existsSync(target)) throw new CommandError(`no file at ${target}`);
  const verdict = verifyDatabaseFile(target);
  if (values.json) {
    console.log(JSON.stringify({ file: target, ...verdict }));
    return verdict.ok;
  }
  const fk = verdict.foreignKeys.length === 0 ? "ok" : `${verdict.foreignKeys.length} violation(s)`;
  console.log(`${verdict.ok ? "ok" : "FAILED"} ${target}`);
  console.log(`  integrity_check    ${verdict.integrity.slice(0, 10).join("\n                     ")}`);
  console.log(`  foreign_key_check  ${fk}`);
  for (const v of verdict.foreignKeys.slice(0, 10)) {
    console.log(`    ${v.table} row ${v.rowid} references a missing ${v.parent}`);
  }
  return verdict.ok;
}

function checkpoint(config: Config): boolean {
  requireDatabase(config);
  const result = checkpointDatabase(config.databasePath, config.busyTimeoutMs);
  if (values.json) {
    console.log(JSON.stringify(result));
    return true;
  }
  console.log(
    `checkpointed ${result.checkpointedPages} of ${result.walPages} WAL page(s); WAL ${formatBytes(result.walBytesBefore)} -> ${formatBytes(result.walBytesAfter)}`,
  );
  if (result.busy) {
    console.log("partial: another connection was reading the log; the rest waits for the next checkpoint");
  }
  return true;
}

function restore(config: Config): boolean {
  if (!file === !values.latest) throw new UsageError("restore takes a backup file or --latest (or --drill)");
  let source = file;
  if (values.latest) {
    source = findNewestBackup(config.backupDir, config.databasePath)?.path;
    if (!source) throw new CommandError(`no backup of ${config.databasePath} in ${config.backupDir}`);
  }
  const result = restoreBackup({
    databasePath: config.databasePath,
    backupDir: config.backupDir,
    source: source!,
  });
  if (values.json) {
    console.log(JSON.stringify({ ...result, previous: result.previous && describe(result.previous) }));
    return true;
  }
  console.log(`verified  ${result.source} (integrity_check, foreign_key_check)`);
  if (result.previous) console.log(`kept      ${result.previous.path} (the database as it was)`);
  for (const raw of result.previousUnreadable)
    console.log(`kept      ${raw} (the old file, unreadable by SQLite)`);
  for (const removed of result.removed) console.log(`removed   ${removed}`);
  console.log(`restored  ${result.databasePath} from ${path.basename(result.source)}`);
  return true;
}

async function drill(config: Config): Promise<boolean> {
  if (file || values.latest) throw new UsageError("--drill always uses the newest backup");
  const report = await runRestoreDrill({
    databasePath: config.databasePath,
    backupDir: config.backupDir,
    migrationsDir: config.migrationsDir,
    logger: createLogger(config, 2),
  });
  if (values.json) {
    console.log(JSON.stringify({ ...report, backup: describe(report.backup) }));
    return report.verdict.ok;
  }
  const { backup, migrated, verdict } = report;
  console.log(`backup    ${backup.path} (${backup.kind}, ${formatBytes(backup.sizeBytes)})`);
  console.log(`restored  into a scratch copy`);
  console.log(migrated.length ? `migrated  ${migrated.join(", ")}` : "migrated  nothing pending");
  console.log(
    verdict.ok
      ? "verified  integrity_check ok, foreign_key_check ok"
      : `FAILED    ${[...verdict.integrity, ...verdict.foreignKeys.map((v) => `${v.table} -> ${v.parent}`)].slice(0, 5).join("; ")}`,
  );
  printTable(
    ["table", "restored", "live"],
    Object.entries(report.tables).map(([name, { restored, live }]) => [
      name,
      String(restored ?? "-"),
      String(live ?? "-"),
    ]),
  );
  console.log(verdict.ok ? "drill passed; scratch copy deleted, nothing live touched" : "drill FAILED");
  return verdict.ok;
}

function describe(b: BackupFile) {
  return {
    path: b.path,
    file: b.file,
    kind: b.kind,
    label: b.label ?? null,
    createdAt: b.createdAt.toISOString(),
    sizeBytes: b.sizeBytes,
  };
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [head, ...rows]) {
    console.log(
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd(),
    );
  }
}
