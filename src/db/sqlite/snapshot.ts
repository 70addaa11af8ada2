// SQLite backups: consistent snapshots of a live database, taken through SQLite (never a file copy,
// which in WAL mode misses commits still in -wal), verified (integrity_check, foreign_key_check)
// and made durable before they get their final name.
import fs from "node:fs";
import { Worker } from "node:worker_threads";
import BetterSqlite3 from "better-sqlite3";
import {
  type BackupFile,
  type BackupKind,
  installBackupFile,
  type PendingBackup,
  startBackupFile,
  syncFile,
} from "../../backups/files.ts";
import { BackupError, type Verdict, verdictOf } from "../storage.ts";
import { databaseNameOf } from "./open.ts";
import { fileSize } from "./stats.ts";

/** SQLite's own findings beside the engine-neutral verdict (`db:verify --json` shows them). */
export interface SqliteVerdict extends Verdict {
  /** SQLite's `integrity_check` findings; `["ok"]` when there are none. */
  integrity: string[];
  /** Rows whose REFERENCES point at nothing (`foreign_key_check`). */
  foreignKeys: { table: string; rowid: number | null; parent: string }[];
}

/**
 * `integrity_check` and `foreign_key_check` of a database file: safe on the live database while
 * the service runs (one read transaction; writers go on).
 */
export function verifyDatabaseFile(file: string): SqliteVerdict {
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

export function verifyConnection(db: BetterSqlite3.Database): SqliteVerdict {
  const integrity = (db.pragma("integrity_check") as { integrity_check: string }[]).map(
    (row) => row.integrity_check,
  );
  const foreignKeys = (
    db.pragma("foreign_key_check") as { table: string; rowid: number | null; parent: string }[]
  ).map(({ table, rowid, parent }) => ({ table, rowid, parent }));
  return {
    ...verdictOf([
      { name: "integrity_check", findings: integrity.filter((line) => line !== "ok") },
      {
        name: "foreign_key_check",
        findings: foreignKeys.map((v) => `${v.table} row ${v.rowid} references a missing ${v.parent}`),
      },
    ]),
    integrity,
    foreignKeys,
  };
}

export interface TakeBackupOptions {
  databasePath: string;
  backupDir: string;
  kind: BackupKind;
  label?: string;
  now?: Date;
  /**
   * Copy through this connection instead of one of our own: for a caller that holds an exclusive
   * lock on the database (restore), which a second connection could not get past.
   */
  connection?: BetterSqlite3.Database;
}

/**
 * Snapshot `databasePath` with `VACUUM INTO` through a connection of its own (a consistent read
 * transaction, so writers elsewhere go on), verify the copy, and only then give it its final name.
 * Synchronous, for as long as the copy takes: callers that serve requests meanwhile use `takeOnlineBackup`.
 */
export function takeBackup({ connection, ...options }: TakeBackupOptions): BackupFile {
  const pending = startSnapshot(options);
  try {
    snapshotInto(options.databasePath, pending.tmpPath, connection);
    return installBackupFile(pending);
  } catch (error) {
    removeWithCompanions(pending.tmpPath);
    throw error;
  }
}

export interface TakeOnlineBackupOptions extends Omit<TakeBackupOptions, "connection"> {
  /** Stops the snapshot (at shutdown); the partial file is removed once the worker has stopped. */
  signal?: AbortSignal | undefined;
  /** The copy's size as it grows, against the database file's (VACUUM INTO writes no more than that). */
  onProgress?: ((written: number, expected: number | undefined) => void) | undefined;
}

const PROGRESS_EVERY_MS = 250;

/**
 * Snapshot for a process that is serving requests: `takeBackup`'s VACUUM INTO, verification and
 * fsync, run in a worker thread with a connection of its own. Each of those is one synchronous
 * call as long as the database is large (seconds per GB), which on the serving thread would stall
 * every request; in WAL mode the worker's read transaction blocks no writer. SQLite's online backup
 * API through the serving connection was tried first: its batches yield to the loop, but its last
 * step (commit and sync of the copy) stalled the service for 3.5 s on a 1 GB database.
 */
export async function takeOnlineBackup({
  signal,
  onProgress,
  ...options
}: TakeOnlineBackupOptions): Promise<BackupFile> {
  signal?.throwIfAborted();
  const pending = startSnapshot(options);
  // VACUUM INTO is one call with no progress callback: the file it writes is watched instead.
  const expected = fs.statSync(options.databasePath).size;
  const report = () => onProgress?.(fileSize(pending.tmpPath), expected);
  const watching = onProgress && setInterval(report, PROGRESS_EVERY_MS).unref();
  try {
    await snapshotInWorker(options.databasePath, pending.tmpPath, signal);
    report();
    return installBackupFile(pending);
  } catch (error) {
    removeWithCompanions(pending.tmpPath);
    throw error;
  } finally {
    clearInterval(watching);
  }
}

function startSnapshot({
  databasePath,
  backupDir,
  kind,
  label,
  now = new Date(),
}: Omit<TakeBackupOptions, "connection">): PendingBackup {
  return startBackupFile(backupDir, {
    database: databaseNameOf(databasePath),
    kind,
    label,
    createdAt: now,
    extension: ".db",
  });
}

/** VACUUM INTO `file`, then `prepareBackupCopy` and fsync, in snapshot-worker.ts. */
function snapshotInWorker(source: string, file: string, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./snapshot-worker.ts", import.meta.url), {
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

/** Throws a BackupError naming `what` and the first findings unless the verdict is clean. */
export function assertSound(verdict: Verdict, what: string): void {
  if (verdict.ok) return;
  const findings = verdict.checks.flatMap((check) => check.findings);
  throw new BackupError(`${what} failed verification: ${findings.slice(0, 3).join("; ")}`);
}

/** The files SQLite keeps beside a database: its WAL, the WAL's index, its rollback journal. */
export const SQLITE_COMPANIONS = ["-wal", "-shm", "-journal"] as const;

/** Removes a database file and whatever companions SQLite left beside it. */
export function removeWithCompanions(file: string): void {
  for (const suffix of ["", ...SQLITE_COMPANIONS]) fs.rmSync(`${file}${suffix}`, { force: true });
}
