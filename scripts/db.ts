// npm run db:backup | db:list | db:verify [-- <file>] | db:checkpoint | db:restore -- <file>|--latest|--drill
// Off-site (BACKUP_S3_URL): db:backup -- --upload | db:list -- --remote | db:restore -- --from-remote latest|NAME
// Database maintenance from the command line, safe while the service runs (except restore, which
// refuses to). The answer goes to stdout (--json for machines), diagnostics to stderr.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { type BackupFile, findNewestBackup, listBackups } from "../src/backups/files.ts";
import { OffsiteError } from "../src/backups/offsite/errors.ts";
import { drillFromBucket, fetchBackup, listBucket, uploadNow } from "../src/backups/offsite/operations.ts";
import type { RemoteBackup } from "../src/backups/offsite/remote.ts";
import { createProgress, type Progress } from "../src/backups/progress.ts";
import { DrillError, type DrillReport, runRestoreDrill } from "../src/backups/rehearsal.ts";
import { pruneBackups } from "../src/backups/retention.ts";
import { type Config, ConfigError, loadConfig, type OffsiteConfig } from "../src/config.ts";
import { MigrationError } from "../src/db/migrator.ts";
import {
  BackupError,
  loadEngine,
  RestoreError,
  type RestoreResult,
  type StorageEngine,
  StorageStartupError,
} from "../src/db/storage.ts";
import { createLogger } from "../src/logger.ts";

const USAGE = `usage: node scripts/db.ts <command> [options]
  backup              take a verified backup now into BACKUP_DIR, then apply retention
  list                the backups, newest first
  verify [FILE]       integrity_check and foreign_key_check of the database (or of FILE)
  checkpoint          wal_checkpoint(TRUNCATE): fold the WAL into the database file
  restore FILE        put a backup in place of the database (the service must be stopped)
  restore --latest    the same with the newest backup
  restore --drill     restore the newest backup into a scratch file, migrate, verify, compare, delete
off-site (BACKUP_S3_URL):
  backup --upload                 take a backup, upload it, wait until it is in the bucket
  list --remote                   the backups in the bucket, newest first
  restore --from-remote latest|NAME [--identity FILE|-]
                                  download, decrypt, check the SHA-256, then restore as above
  restore --drill --from-remote latest|NAME [--identity FILE|-]
                                  the drill, on a backup downloaded from the bucket
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
    remote: { type: "boolean", default: false },
    upload: { type: "boolean", default: false },
    "from-remote": { type: "string" },
    identity: { type: "string" },
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
  const ok = await run(command, config, await loadEngine(config));
  process.exit(ok ? 0 : 1);
} catch (error) {
  if (error instanceof UsageError) {
    console.error(`${error.message}\n${USAGE}`);
    process.exit(2);
  }
  const known = [
    CommandError,
    ConfigError,
    BackupError,
    RestoreError,
    DrillError,
    MigrationError,
    StorageStartupError,
    OffsiteError,
  ].some((t) => error instanceof t);
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  console.error(`db ${command ?? ""}: ${known || !code ? message : `${code}: ${message}`}`);
  if (!known && !code) console.error((error as Error).stack);
  process.exit(1);
}

async function run(name: string | undefined, config: Config, engine: StorageEngine): Promise<boolean> {
  switch (name) {
    case "backup":
      return values.upload ? backupAndUpload(config, engine) : backup(config, engine);
    case "list":
      return values.remote ? listRemote(config) : list(config);
    case "verify":
      return verify(engine);
    case "checkpoint":
      return checkpoint(engine);
    case "restore":
      if (values["from-remote"] !== undefined) {
        return values.drill ? drillRemote(config, engine) : restoreRemote(config, engine);
      }
      return values.drill ? drill(config, engine) : restore(config, engine);
    default:
      throw new UsageError(name ? `unknown command ${name}` : "which command?");
  }
}

async function requireDatabase(engine: StorageEngine): Promise<void> {
  if (!(await engine.exists())) throw new CommandError(`no database at ${engine.target}`);
}

async function backup(config: Config, engine: StorageEngine): Promise<boolean> {
  const local = await takeLocalBackup(config, engine);
  if (values.json) {
    console.log(JSON.stringify({ backup: describe(local.taken), pruned: local.pruned.map(describe) }));
  } else {
    console.log(local.taken.path);
    printBackupTaken(config, engine, local);
  }
  return true;
}

async function takeLocalBackup(config: Config, engine: StorageEngine) {
  await requireDatabase(engine);
  const started = performance.now();
  // On a terminal, the snapshot's progress (a large database takes seconds per GB).
  let shown: Progress | undefined;
  let done = 0;
  const taken = await engine.backup({
    backupDir: config.backupDir,
    kind: "manual",
    onProgress: (written, expected) => {
      shown ??= createProgress({ label: "snapshot", total: expected });
      shown.add(written - done);
      done = written;
    },
  });
  shown?.finish();
  const pruned = pruneBackups({
    database: engine.database,
    backupDir: config.backupDir,
    keep: config.backupKeep,
    maxAgeDays: config.backupMaxAgeDays,
  });
  return { taken, pruned, ms: Math.round(performance.now() - started) };
}

function printBackupTaken(
  config: Config,
  engine: StorageEngine,
  { taken, pruned, ms }: Awaited<ReturnType<typeof takeLocalBackup>>,
): void {
  console.error(`verified (${engine.verification.join(", ")}), ${formatBytes(taken.sizeBytes)} in ${ms} ms`);
  for (const old of pruned) console.error(`pruned ${old.file} (BACKUP_KEEP=${config.backupKeep})`);
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

async function verify(engine: StorageEngine): Promise<boolean> {
  const target = file ? path.resolve(file) : engine.target;
  if (!file) await requireDatabase(engine);
  else if (!fs.existsSync(target)) throw new CommandError(`no file at ${target}`);
  const verdict = await engine.verify(file ? target : undefined);
  if (values.json) {
    console.log(JSON.stringify({ file: target, ...verdict }));
    return verdict.ok;
  }
  console.log(`${verdict.ok ? "ok" : "FAILED"} ${target}`);
  const width = Math.max(...verdict.checks.map((c) => c.name.length)) + 2;
  for (const { name, findings } of verdict.checks) {
    const lines = findings.length === 0 ? ["ok"] : findings.slice(0, 10);
    console.log(`  ${name.padEnd(width)} ${lines.join(`\n  ${" ".repeat(width)} `)}`);
  }
  return verdict.ok;
}

async function checkpoint(engine: StorageEngine): Promise<boolean> {
  if (!engine.checkpoint) {
    console.log(`nothing to do: ${engine.name} checkpoints its own write-ahead log`);
    return true;
  }
  await requireDatabase(engine);
  const result = await engine.checkpoint();
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

async function restore(config: Config, engine: StorageEngine): Promise<boolean> {
  if (!file === !values.latest) throw new UsageError("restore takes a backup file or --latest (or --drill)");
  let source = file;
  if (values.latest) {
    source = findNewestBackup(config.backupDir, engine.database)?.path;
    if (!source) throw new CommandError(`no backup of ${engine.target} in ${config.backupDir}`);
  }
  const result = await engine.restore({ backupDir: config.backupDir, source: source! });
  if (values.json) console.log(JSON.stringify(describeRestore(result)));
  else printRestore(engine, result);
  return true;
}

function describeRestore(result: RestoreResult) {
  return { ...result, previous: result.previous && describe(result.previous) };
}

function printRestore(engine: StorageEngine, result: RestoreResult): void {
  console.log(`verified  ${result.source} (${engine.verification.join(", ")})`);
  if (result.previous) console.log(`kept      ${result.previous.path} (the database as it was)`);
  for (const note of result.notes) console.log(note);
  console.log(`restored  ${result.target} from ${path.basename(result.source)}`);
}

async function drill(config: Config, engine: StorageEngine): Promise<boolean> {
  if (file || values.latest) throw new UsageError("--drill always uses the newest backup");
  const report = await runRestoreDrill({
    engine,
    backupDir: config.backupDir,
    migrationsDir: config.migrationsDir,
    logger: createLogger(config, 2),
  });
  if (values.json) console.log(JSON.stringify(describeDrill(report)));
  else printDrill(report);
  return report.verdict.ok;
}

function describeDrill(report: DrillReport) {
  return { ...report, backup: describe(report.backup) };
}

function printDrill(report: DrillReport): void {
  const { backup, migrated, verdict } = report;
  console.log(`backup    ${backup.path} (${backup.kind}, ${formatBytes(backup.sizeBytes)})`);
  console.log(`restored  into a scratch copy`);
  console.log(migrated.length ? `migrated  ${migrated.join(", ")}` : "migrated  nothing pending");
  console.log(
    verdict.ok
      ? `verified  ${verdict.checks.map((c) => `${c.name} ok`).join(", ")}`
      : `FAILED    ${verdict.checks
          .flatMap((c) => c.findings)
          .slice(0, 5)
          .join("; ")}`,
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
}

// --- off-site: thin printing around src/backups/offsite/operations.ts --------------------------

function requireOffsite(config: Config): OffsiteConfig {
  if (!config.offsite) throw new CommandError("off-site backups are not configured: set BACKUP_S3_URL");
  return config.offsite;
}

/** Aborted by SIGTERM or Ctrl-C: an upload in flight is aborted on the server, a download removed. */
function stopSignal(): AbortSignal {
  const controller = new AbortController();
  const stop = (signal: NodeJS.Signals) => {
    console.error(`${signal}: stopping`);
    controller.abort();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return controller.signal;
}

function progress(label: string, total: number) {
  return createProgress({ label, total });
}

async function backupAndUpload(config: Config, engine: StorageEngine): Promise<boolean> {
  const offsite = requireOffsite(config);
  const local = await takeLocalBackup(config, engine);
  if (!values.json) {
    console.log(local.taken.path);
    printBackupTaken(config, engine, local);
  }
  const { upload, pruned } = await uploadNow({
    offsite,
    database: engine.database,
    backup: local.taken,
    signal: stopSignal(),
    progress,
  }).catch((error: unknown) => {
    throw new OffsiteError(`${(error as Error).message}; the local backup is kept: ${local.taken.path}`, {
      cause: error,
    });
  });
  if (values.json) {
    console.log(
      JSON.stringify({
        backup: describe(local.taken),
        pruned: local.pruned.map(describe),
        upload,
        prunedRemote: pruned.map(describeRemote),
      }),
    );
    return true;
  }
  console.error(
    `uploaded to ${offsite.url}: ${upload.key}, ${formatBytes(upload.objectBytes)} (${upload.encrypted ? "compressed, encrypted with age" : "compressed, NOT encrypted"}) in ${upload.ms} ms`,
  );
  for (const old of pruned)
    console.error(`pruned ${old.key} from the bucket (BACKUP_S3_KEEP=${offsite.keep})`);
  return true;
}

async function listRemote(config: Config): Promise<boolean> {
  const offsite = requireOffsite(config);
  const backups = await listBucket({ offsite, signal: stopSignal() });
  if (values.json) {
    console.log(JSON.stringify(backups.map(describeRemote)));
    return true;
  }
  if (backups.length === 0) {
    console.log(`no backups in ${offsite.url}`);
    return true;
  }
  printTable(
    ["created", "kind", "size", "encrypted", "uploaded", "name"],
    backups.map((b) => [
      formatTime(b.createdAt),
      b.kind,
      formatBytes(b.sizeBytes),
      b.encrypted ? "age" : "NO",
      formatTime(b.uploadedAt),
      b.name,
    ]),
  );
  const retention = offsite.prune
    ? `BACKUP_S3_KEEP=${offsite.keep}`
    : "retention left to the bucket's lifecycle rules";
  console.log(`${backups.length} backup(s) in ${offsite.url} (${retention})`);
  return true;
}

function fetchOptions(offsite: OffsiteConfig) {
  if (file || values.latest || !values["from-remote"]) {
    throw new UsageError("--from-remote takes latest or a backup's name");
  }
  return {
    offsite,
    which: values["from-remote"],
    identityFile: values.identity,
    signal: stopSignal(),
    progress,
  };
}

async function restoreRemote(config: Config, engine: StorageEngine): Promise<boolean> {
  const offsite = requireOffsite(config);
  const download = await fetchBackup({
    ...fetchOptions(offsite),
    database: engine.database,
    dir: config.backupDir,
  });
  if (!values.json) printDownload(download);
  // On a fresh host (the machine is gone) the data folder may not exist yet.
  fs.mkdirSync(path.dirname(config.databasePath), { recursive: true, mode: 0o700 });
  const result = await engine.restore({ backupDir: config.backupDir, source: download.path });
  if (values.json) console.log(JSON.stringify({ download, restore: describeRestore(result) }));
  else printRestore(engine, result);
  return true;
}

async function drillRemote(config: Config, engine: StorageEngine): Promise<boolean> {
  const offsite = requireOffsite(config);
  const { download, drill } = await drillFromBucket({
    ...fetchOptions(offsite),
    engine,
    backupDir: config.backupDir,
    migrationsDir: config.migrationsDir,
    logger: createLogger(config, 2),
  });
  if (values.json) {
    console.log(JSON.stringify({ download, drill: describeDrill(drill) }));
    return drill.verdict.ok;
  }
  printDownload(download);
  printDrill(drill);
  return drill.verdict.ok;
}

function printDownload(download: Awaited<ReturnType<typeof fetchBackup>>): void {
  const { remote } = download;
  const how = remote.encrypted
    ? "decrypted (age), decompressed"
    : "decompressed (the object is NOT encrypted)";
  console.log(
    download.downloaded
      ? `fetched   ${remote.key} (${formatBytes(remote.sizeBytes)}): ${how}, SHA-256 matches, ${formatBytes(download.plainBytes)} in ${download.ms} ms`
      : `fetched   nothing: ${download.path} is already here and matches ${remote.key}'s SHA-256`,
  );
}

function describeRemote(b: RemoteBackup) {
  return {
    key: b.key,
    name: b.name,
    database: b.database,
    kind: b.kind,
    label: b.label ?? null,
    format: b.format,
    encrypted: b.encrypted,
    createdAt: b.createdAt.toISOString(),
    uploadedAt: b.uploadedAt.toISOString(),
    sizeBytes: b.sizeBytes,
  };
}

function formatTime(date: Date): string {
  return date
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
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
