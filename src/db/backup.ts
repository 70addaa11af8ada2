// Backups: consistent snapshots of a live database, taken through SQLite (never a file copy, which
// in WAL mode misses commits still in -wal), verified before they are kept, named so a listing
// tells database, time and kind.
import fs from "node:fs";
import path from "node:path";
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
  const database = path.basename(databasePath).replace(/\.[^.]*$/, "");
  return `${database}-${formatStamp(date)}-${kind}${label ? `-${label}` : ""}.db`;
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

export function findNewestBackup(dir: string): BackupFile | undefined {
  return listBackups(dir)[0];
}

/** `integrity_check` of a database file; returns SQLite's findings, or ["ok"]. */
export function checkIntegrity(file: string): string[] {
  const db = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
  try {
    const rows = db.pragma("integrity_check") as { integrity_check: string }[];
    return rows.map((row) => row.integrity_check);
  } finally {
    db.close();
  }
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
}

/**
 * Snapshot `databasePath` with `VACUUM INTO` through a connection of its own (a consistent read
 * transaction, so writers elsewhere go on), verify the copy, and only then give it its final name:
 * a crash at any point leaves at most a `.tmp` file, which nothing mistakes for a backup.
 * `VACUUM INTO` is synchronous: callers that serve requests meanwhile should use the online
 * backup API instead.
 */
export function takeBackup({
  databasePath,
  backupDir,
  kind,
  label,
  now = new Date(),
}: TakeBackupOptions): BackupFile {
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const file = backupFileName(databasePath, kind, now, label);
  const finalPath = path.join(backupDir, file);
  const tmpPath = path.join(backupDir, `.${file}.${process.pid}.tmp`);
  try {
    const source = new BetterSqlite3(databasePath, { readonly: true, fileMustExist: true });
    try {
      source.prepare("VACUUM INTO ?").run(tmpPath);
    } finally {
      source.close();
    }
    const findings = checkIntegrity(tmpPath);
    if (findings.length !== 1 || findings[0] !== "ok") {
      throw new BackupError(`backup ${tmpPath} failed integrity_check: ${findings.slice(0, 3).join("; ")}`);
    }
    fs.chmodSync(tmpPath, 0o600);
    syncFile(tmpPath);
    fs.renameSync(tmpPath, finalPath);
    syncFile(backupDir);
  } catch (error) {
    fs.rmSync(tmpPath, { force: true });
    throw error;
  }
  return {
    path: finalPath,
    file,
    database: path.basename(databasePath).replace(/\.[^.]*$/, ""),
    kind,
    label,
    createdAt: now,
    sizeBytes: fs.statSync(finalPath).size,
  };
}

// fsync so that a rename that survived a power cut names a complete file.
function syncFile(target: string): void {
  const fd = fs.openSync(target, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
