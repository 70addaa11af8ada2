// Backup files, whatever the engine: their names (database, time, kind, label), the listing of a
// backup folder, and the life of a new backup (temporary name → verified → fsync → rename), so a
// crash at any point leaves at most a temporary file that nothing mistakes for a backup.
import fs from "node:fs";
import path from "node:path";

export const BACKUP_KINDS = ["manual", "scheduled", "pre-migration", "pre-rollback", "pre-restore"] as const;
export type BackupKind = (typeof BACKUP_KINDS)[number];

/** One extension per engine's format: a SQLite file, or a PostgreSQL custom-format dump. */
export const BACKUP_EXTENSIONS = [".db", ".dump"] as const;
export type BackupExtension = (typeof BACKUP_EXTENSIONS)[number];

export interface BackupFile {
  path: string;
  file: string;
  /** The database the backup is of: a SQLite file's name without extension, or a PostgreSQL database's. */
  database: string;
  kind: BackupKind;
  /** The migration a pre-migration (or pre-rollback) backup was taken for. */
  label: string | undefined;
  createdAt: Date;
  sizeBytes: number;
}

// app-20261125T142549123Z-pre-migration-0002_add_tags.db
const NAME_PATTERN = new RegExp(
  `^(?<database>.+)-(?<stamp>\\d{8}T\\d{9}Z)-(?<kind>${BACKUP_KINDS.join("|")})(?:-(?<label>[A-Za-z0-9_.-]+))?(?<ext>\\.db|\\.dump)$`,
);

function formatStamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, "");
}

function parseStamp(stamp: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(stamp)!;
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
}

export interface BackupName {
  database: string;
  kind: BackupKind;
  label?: string | undefined;
  createdAt: Date;
  extension: BackupExtension;
}

export function backupFileName({ database, kind, label, createdAt, extension }: BackupName): string {
  return `${database}-${formatStamp(createdAt)}-${kind}${label ? `-${label}` : ""}${extension}`;
}

/** What a backup's name says about it; undefined for any other file. */
export function parseBackupFileName(file: string): BackupName | undefined {
  const groups = NAME_PATTERN.exec(file)?.groups;
  if (!groups) return undefined;
  return {
    database: groups.database!,
    kind: groups.kind as BackupKind,
    label: groups.label,
    createdAt: parseStamp(groups.stamp!),
    extension: groups.ext as BackupExtension,
  };
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
    const parsed = parseBackupFileName(file);
    if (!parsed) continue;
    const full = path.join(dir, file);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(full);
    } catch {
      continue; // pruned or renamed while we listed
    }
    if (!stat.isFile()) continue;
    const { database, kind, label, createdAt } = parsed;
    backups.push({ path: full, file, database, kind, label, createdAt, sizeBytes: stat.size });
  }
  return backups.sort(
    (a, b) => b.createdAt.getTime() - a.createdAt.getTime() || b.file.localeCompare(a.file),
  );
}

/** The newest backup in `dir`; with `database`, the newest of that database's backups. */
export function findNewestBackup(dir: string, database?: string): BackupFile | undefined {
  return listBackups(dir).find((backup) => database === undefined || backup.database === database);
}

/** A backup being written: its final name, and the temporary one it is written under. */
export interface PendingBackup {
  name: BackupName;
  backupDir: string;
  file: string;
  finalPath: string;
  tmpPath: string;
}

export const TMP_SUFFIX = ".tmp";

/** Names a new backup and clears the way for its temporary file. */
export function startBackupFile(backupDir: string, name: BackupName): PendingBackup {
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const file = backupFileName(name);
  // A leading dot and a .tmp suffix: no listing, restore or retention takes it for a backup.
  const tmpPath = path.join(backupDir, `.${file}.${process.pid}${TMP_SUFFIX}`);
  fs.rmSync(tmpPath, { force: true }); // VACUUM INTO and pg_dump -f both want a fresh target
  return { name, backupDir, file, finalPath: path.join(backupDir, file), tmpPath };
}

/**
 * Gives a verified copy its final name. The caller has made it durable (owner-only, fsynced) off
 * the event loop, as an fsync of a large file would stall it: a rename that survives a power cut
 * must name a whole file.
 */
export function installBackupFile(pending: PendingBackup): BackupFile {
  const { tmpPath, finalPath, backupDir, name } = pending;
  fs.renameSync(tmpPath, finalPath);
  syncFile(backupDir);
  return {
    path: finalPath,
    file: pending.file,
    database: name.database,
    kind: name.kind,
    label: name.label,
    createdAt: name.createdAt,
    sizeBytes: fs.statSync(finalPath).size,
  };
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

/**
 * In the backup folder rather than /tmp: it is on the data volume, with room for a database-sized
 * copy (a container's /tmp is often a small tmpfs). The leading dot keeps it out of listings.
 */
export async function withScratchDir<T>(backupDir: string, work: (dir: string) => Promise<T>): Promise<T> {
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const dir = fs.mkdtempSync(path.join(backupDir, ".rehearsal-"));
  try {
    return await work(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
