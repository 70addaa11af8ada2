// Retention: which backups of a database are kept after each new one, and the clean-up of
// temporary files a crashed backup left behind.
import fs from "node:fs";
import path from "node:path";
import { type BackupFile, listBackups } from "./files.ts";

export interface RetentionPolicy {
  /** Keep the newest `keep` backups of the database. */
  keep: number;
  /** And of those, only the ones younger than this; null: no age limit. */
  maxAgeDays: number | null;
}

/**
 * Applies the retention policy to the backups of `database` in `backupDir` (other databases'
 * backups in the same folder are left alone) and returns what it removed. Every kind follows the
 * policy, but the newest pre-migration backup is always kept: it is the way back from the last
 * schema change. Temporary files a day older than the folder's newest entry (left by a crash) are
 * removed too.
 */
export function pruneBackups({
  database,
  backupDir,
  keep,
  maxAgeDays,
  now = new Date(),
}: RetentionPolicy & { database: string; backupDir: string; now?: Date }): BackupFile[] {
  const mine = listBackups(backupDir).filter((b) => b.database === database);
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
      const temporary = name.startsWith(".") && /\.tmp(-journal|-wal|-shm)?$/.test(name);
      entries.push({ full, mtimeMs, temporary });
    } catch {
      // gone already
    }
  }
  for (const { full, mtimeMs, temporary } of entries) {
    if (temporary && reference - mtimeMs > DAY_MS) fs.rmSync(full, { force: true });
  }
}
