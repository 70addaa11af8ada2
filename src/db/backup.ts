// Backups: consistent snapshots of a live database, taken through SQLite (never a file copy, which
// in WAL mode misses commits still in -wal), verified before they are kept, named so a listing
// tells database, time and kind.
import fs from "node:fs";
import path from "node:path";
import { Worker } from "node:worker_threads";
import BetterSqlite3 from "better-sqlite3";

export const BACKUP_KINDS = ["manual", "scheduled", "pre-migration", "pre-rollback", "pre-restore"] as const;
export type BackupKind = (typeof BACKUP_KINDS)[number];

export interface BackupFile {
  path: string;
  file: string;
  database: string;
  kind: BackupKind;
  /** The migration a pre-migration (or pre-rollback) backup was taken for. */
  label: string | undefined;
  createdAt: Date;
  sizeBytes: number;
}

// app-20261125T142549123Z-pre-migration-0002_add_tags.db
const NAME_PATTERN = new RegExp(
  `^(?<database>.+)-(?<stamp>\\d{8}T\\d{9}Z)-(?<kind>${BACKUP_KINDS.join("|")})(?:-(?<label>[A-Za-z0-9_.-]+))?\\.db$`,
);

function formatStamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, "");
}

function parseStamp(stamp: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(stamp)!;
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
}

export function backupFileName(databasePath: string, kind: BackupKind, date: Date, label?: string): string {
  return `${databaseName(databasePath)}-${formatStamp(date)}-${kind}${label ? `-${label}` : ""}.db`;
}

/** Backups in `dir`, newest first. Temporary and foreign files are ignored. */
export function listBackups(dir: string): BackupFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const backups: BackupFile[] = [];
  for (const file of names) {
    const groups = NAME_PATTERN.exec(file)?.groups;
    if (!groups) continue;
    const full = path.join(dir, file);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(full);
    } catch {
      continue; // pruned or renamed while we listed
    }
    if (!stat.isFile()) continue;
    backups.push({
      path: full,
      file,
      database: groups.database!,
      kind: groups.kind as BackupKind,
      label: groups.label,
      createdAt: parseStamp(groups.stamp!),
      sizeBytes: stat.size,
    });
  }
  return backups.sort(
    (a, b) => b.createdAt.getTime() - a.createdAt.getTime() || b.file.localeCompare(a.file),
  );
}

/** The newest backup in `dir`; with `databasePath`, the newest of that database's backups. */
export function findNewestBackup(dir: string, databasePath?: string): BackupFile | undefined {
  const name = databasePath === undefined ? undefined : databaseName(databasePath);
  return listBackups(dir).find((backup) => name === undefined || backup.database === name);
}

export interface Verdict {
  /** SQLite's `integrity_check` findings; `["ok"]` when there are none. */
  integrity: string[];
  /** Rows whose REFERENCES point at nothing (`foreign_key_check`). */
  foreignKeys: { table: string; rowid: number | null; parent: string }[];
  ok: boolean;
}

/**
 * `integrity_check` and `foreign_key_check` of a database file: safe on the live database while
 * the service runs (one read transaction; writers go on).
 */
export function verifyDatabaseFile(file: string): Verdict {
  const db = openForReading(file);
  try {
    return verifyConnection(db);
  } finally {
    db.close();
  }
}

/**
 * A connection that only reads (`query_only`). Read-write in SQLite's terms all the same: a
 * read-only connection to a WAL database creates -wal/-shm beside it that it cannot remove, and
 * would leave them behind when the service is not running; this one removes them on close.
 * The price: when it is the last connection, closing it also checkpoints a -wal a crash left into
 * the database file, as the service's next start would. (A read-only connection cannot use
 * locking_mode=EXCLUSIVE, the one way to read a WAL database without creating -shm.)
 */
export function openForReading(file: string): BetterSqlite3.Database {
  const db = new BetterSqlite3(file, { fileMustExist: true });
  db.pragma("query_only = ON");
  return db;
}

export function verifyConnection(db: BetterSqlite3.Database): Verdict {
  const integrity = (db.pragma("integrity_check") as { integrity_check: string }[]).map(
    (row) => row.integrity_check,
  );
  const foreignKeys = (
    db.pragma("foreign_key_check") as { table: string; rowid: number | null; parent: string }[]
  ).map(({ table, rowid, parent }) => ({ table, rowid, parent }));
  return {
    integrity,
    foreignKeys,
    ok: integrity.length === 1 && integrity[0] === "ok" && foreignKeys.length === 0,
  };
}

export class BackupError extends Error {
  override name = "BackupError";
}

export interface TakeBackupOptions {
  databasePath: string;
  backupDir: string;
  kind: BackupKind;
  label?: string;
  now?: Date;
  /**
   * Copy through this connection instead of a read-only one of our own: for a caller that holds an
   * exclusive lock on the database (restore), which a second connection could not get past.
   */
  connection?: BetterSqlite3.Database;
}

/**
 * Snapshot `databasePath` with `VACUUM INTO` through a connection of its own (a consistent read
 * transaction, so writers elsewhere go on), verify the copy, and only then give it its final name:
 * a crash at any point leaves at most a `.tmp` file, which nothing mistakes for a backup.
 * Synchronous, for as long as the copy takes: callers that serve requests meanwhile use `takeOnlineBackup`.
 */
export function takeBackup({ connection, ...options }: TakeBackupOptions): BackupFile {
  const target = startBackupFile(options);
  try {
    snapshotInto(options.databasePath, target.tmpPath, connection);
    return installBackupFile(target);
  } catch (error) {
    abandonBackupFile(target);
    throw error;
  }
}

export interface TakeOnlineBackupOptions extends Omit<TakeBackupOptions, "databasePath" | "connection"> {
  /** The serving connection's database. */
  db: { path: string };
  /** Stops the snapshot (at shutdown); the partial file is removed once the worker has stopped. */
  signal?: AbortSignal;
}

/**
 * Snapshot for a process that is serving requests: `takeBackup`'s VACUUM INTO, verification and
 * fsync, run in a worker thread with a connection of its own. Each of those is one synchronous
 * call as long as the database is large (seconds per GB), which on the serving thread would stall
 * every request; in WAL mode the worker's read transaction blocks no writer. SQLite's online backup
 * API through the serving connection was tried first: its batches yield to the loop, but its last
 * step (commit and sync of the copy) stalled the service for 3.5 s on a 1 GB database.
 */
export async function takeOnlineBackup({
  db,
  signal,
  ...options
}: TakeOnlineBackupOptions): Promise<BackupFile> {
  signal?.throwIfAborted();
  const target = startBackupFile({ ...options, databasePath: db.path });
  try {
    await snapshotInWorker(db.path, target.tmpPath, signal);
    return installBackupFile(target);
  } catch (error) {
    abandonBackupFile(target);
    throw error;
  }
}

/** VACUUM INTO `file`, then `prepareBackupCopy` and fsync, in backup-worker.ts. */
function snapshotInWorker(source: string, file: string, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./backup-worker.ts", import.meta.url), {
      workerData: { source, file },
    });
    let settled: { error?: unknown } | undefined;
    const onAbort = () => {
      settled ??= { error: signal?.reason };
      // terminate() takes effect once SQLite's current call returns: the promise settles after the
      // worker has stopped, so the caller removes a file nothing writes any more.
      void worker.terminate();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    worker.once("message", (message: { error?: string; backupError?: boolean }) => {
      settled ??=
        message.error === undefined
          ? {}
          : { error: message.backupError ? new BackupError(message.error) : new Error(message.error) };
    });
    worker.once("error", (error) => {
      settled ??= { error };
    });
    worker.once("exit", (code) => {
      signal?.removeEventListener("abort", onAbort);
      const outcome = settled ?? { error: new Error(`backup worker exited with code ${code}`) };
      if ("error" in outcome) reject(outcome.error);
      else resolve();
    });
  });
}

/** VACUUM INTO `file` and make it a verified, durable, owner-only backup copy (not yet renamed). */
export function snapshotInto(databasePath: string, file: string, connection?: BetterSqlite3.Database): void {
  // Read-write in SQLite's terms though it only reads: a read-only connection to a WAL database
  // creates -wal/-shm it cannot remove, leaving them behind when the service is not running.
  const source = connection ?? new BetterSqlite3(databasePath, { fileMustExist: true });
  try {
    source.prepare("VACUUM INTO ?").run(file);
  } finally {
    if (!connection) source.close();
  }
  prepareBackupCopy(file);
  fs.chmodSync(file, 0o600);
  syncFile(file);
}

interface BackupTarget {
  databasePath: string;
  backupDir: string;
  kind: BackupKind;
  label: string | undefined;
  now: Date;
  file: string;
  finalPath: string;
  tmpPath: string;
}

function startBackupFile({
  databasePath,
  backupDir,
  kind,
  label,
  now = new Date(),
}: Omit<TakeBackupOptions, "connection">): BackupTarget {
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const file = backupFileName(databasePath, kind, now, label);
  // A leading dot and a .tmp suffix: no listing, restore or retention takes it for a backup.
  const tmpPath = path.join(backupDir, `.${file}.${process.pid}${TMP_SUFFIX}`);
  fs.rmSync(tmpPath, { force: true }); // VACUUM INTO refuses a target that exists
  return { databasePath, backupDir, kind, label, now, file, finalPath: path.join(backupDir, file), tmpPath };
}

/**
 * Makes a fresh copy a self-contained file (rollback journal mode: a WAL-mode file would need
 * -wal/-shm beside it to be read) and checks it; throws a BackupError unless it is sound.
 */
function prepareBackupCopy(file: string): void {
  const copy = new BetterSqlite3(file, { fileMustExist: true });
  try {
    copy.pragma("journal_mode = DELETE");
    assertSound(verifyConnection(copy), `backup ${file}`);
  } finally {
    copy.close();
  }
}

/** Renames a verified copy into place once it is durable: a rename that survives names a whole file. */
function installBackupFile(target: BackupTarget): BackupFile {
  const { tmpPath, finalPath, backupDir } = target;
  fs.renameSync(tmpPath, finalPath);
  syncFile(backupDir);
  return {
    path: finalPath,
    file: target.file,
    database: databaseName(target.databasePath),
    kind: target.kind,
    label: target.label,
    createdAt: target.now,
    sizeBytes: fs.statSync(finalPath).size,
  };
}

/** Throws a BackupError naming `what` and SQLite's first findings unless the verdict is clean. */
export function assertSound(verdict: Verdict, what: string): void {
  if (verdict.ok) return;
  const findings = [
    ...verdict.integrity.filter((line) => line !== "ok"),
    ...verdict.foreignKeys.map((v) => `${v.table} row ${v.rowid} references a missing ${v.parent}`),
  ];
  throw new BackupError(`${what} failed verification: ${findings.slice(0, 3).join("; ")}`);
}

function abandonBackupFile({ tmpPath }: BackupTarget): void {
  removeWithCompanions(tmpPath);
}

/** The files SQLite keeps beside a database: its WAL, the WAL's index, its rollback journal. */
export const SQLITE_COMPANIONS = ["-wal", "-shm", "-journal"] as const;

/** Removes a database file and whatever companions SQLite left beside it. */
export function removeWithCompanions(file: string): void {
  for (const suffix of ["", ...SQLITE_COMPANIONS]) fs.rmSync(`${file}${suffix}`, { force: true });
}

export interface RetentionPolicy {
  /** Keep the newest `keep` backups of the database. */
  keep: number;
  /** And of those, only the ones younger than this; null: no age limit. */
  maxAgeDays: number | null;
}

/**
 * Applies the retention policy to the backups of `databasePath` in `backupDir` (other databases'
 * backups in the same folder are left alone) and returns what it removed. Every kind follows the
 * policy, but the newest pre-migration backup is always kept: it is the way back from the last
 * schema change. Temporary files a day older than the folder's newest entry (left by a crash) are
 * removed too.
 */
export function pruneBackups({
  databasePath,
  backupDir,
  keep,
  maxAgeDays,
  now = new Date(),
}: RetentionPolicy & { databasePath: string; backupDir: string; now?: Date }): BackupFile[] {
  const mine = listBackups(backupDir).filter((b) => b.database === databaseName(databasePath));
  const newestPreMigration = mine.find((b) => b.kind === "pre-migration");
  const oldest = maxAgeDays === null ? -Infinity : now.getTime() - maxAgeDays * DAY_MS;
  const removed = mine.filter(
    (backup, index) =>
      backup !== newestPreMigration && (index >= keep || backup.createdAt.getTime() < oldest),
  );
  for (const backup of removed) fs.rmSync(backup.path, { force: true });
  removeAbandonedTemporaries(backupDir);
  return removed;
}

const DAY_MS = 24 * 60 * 60 * 1000;
const TMP_SUFFIX = ".tmp";

// A backup in progress writes to its temporary file all along, so one untouched for a day was left
// by a process that died. Age, not "is that pid alive": pids mean nothing across containers.
// Measured on the filesystem's clock, not this process's: mtimes are stamped by the kernel (or a
// file server) while `now` may be injected, skewed or faked, and a backup just written (retention
// runs after one) or removed stamps the folder itself. Against a process clock running ahead, a
// backup still being written would look abandoned.
function removeAbandonedTemporaries(backupDir: string): void {
  let names: string[];
  let reference: number;
  try {
    names = fs.readdirSync(backupDir);
    reference = fs.statSync(backupDir).mtimeMs;
  } catch {
    return;
  }
  const entries: { full: string; mtimeMs: number; temporary: boolean }[] = [];
  for (const name of names) {
    const full = path.join(backupDir, name);
    try {
      const { mtimeMs } = fs.statSync(full);
      reference = Math.max(reference, mtimeMs);
      entries.push({
        full,
        mtimeMs,
        temporary: name.startsWith(".") && /\.tmp(-journal|-wal|-shm)?$/.test(name),
      });
    } catch {
      // gone already
    }
  }
  for (const { full, mtimeMs, temporary } of entries) {
    if (temporary && reference - mtimeMs > DAY_MS) fs.rmSync(full, { force: true });
  }
}

export function databaseName(databasePath: string): string {
  return path.basename(databasePath).replace(/\.[^.]*$/, "");
}

// fsync so that a rename that survived a power cut names a complete file.
export function syncFile(target: string): void {
  const fd = fs.openSync(target, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
