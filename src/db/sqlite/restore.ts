// SQLite restore: put a verified backup in place of the database file, keeping what was there,
// and never while another process has the database open.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { backupFileName, syncFile } from "../../backups/files.ts";
import { BackupError, RestoreError, type RestoreOptions, type RestoreResult } from "../storage.ts";
import { databaseNameOf } from "./open.ts";
import {
  assertSound,
  removeWithCompanions,
  SQLITE_COMPANIONS,
  takeBackup,
  verifyConnection,
} from "./snapshot.ts";

/**
 * Replaces `databasePath` with the backup at `source`:
 * 1. lock the live database (refusing if another process has it open, see lockLiveDatabase);
 * 2. copy the backup beside it under a temporary name and verify the copy (integrity_check,
 *    foreign_key_check): a bad backup is refused before anything live changes;
 * 3. keep the current database as a pre-restore backup (verified like any other);
 * 4. remove the old -wal/-shm/-journal, rename the copy over the database and fsync the folder.
 */
export function restoreBackup({
  databasePath,
  backupDir,
  source,
  now = new Date(),
}: RestoreOptions & { databasePath: string }): RestoreResult {
  const from = path.resolve(source);
  if (!fs.existsSync(from)) throw new RestoreError(`no backup at ${from}; nothing was changed.`);
  if (from === path.resolve(databasePath)) {
    throw new RestoreError(`${from} is the database itself, not a backup; nothing was changed.`);
  }
  // Reported as removed: what a crash (or the service killed with -9) left; the lock below may make
  // files of its own, which go the same way.
  const stale = SQLITE_COMPANIONS.map((suffix) => `${databasePath}${suffix}`).filter((f) => fs.existsSync(f));
  const live = lockLiveDatabase(databasePath);
  let staged: ReturnType<typeof stageCopy> | undefined;
  try {
    staged = stageCopy(from, databasePath);
    const kept = keepCurrent(live, { databasePath, backupDir, now });
    // Before the rename: SQLite opens any -wal it finds beside a database and replays it, and the
    // old database's WAL replayed onto the restored file would corrupt it.
    for (const suffix of SQLITE_COMPANIONS) fs.rmSync(`${databasePath}${suffix}`, { force: true });
    fs.renameSync(staged.path, databasePath);
    syncFile(path.dirname(databasePath));
    return {
      source: from,
      target: databasePath,
      previous: kept.previous,
      notes: [
        ...kept.unreadable.map((raw) => `kept      ${raw} (the old file, unreadable by SQLite)`),
        ...stale.map((file) => `removed   ${file}`),
      ],
    };
  } finally {
    // The old file's lock goes first, the new file's last: until then a service that starts finds
    // the database locked and waits (or stops with an error), never a half-restored one.
    live.connection?.close();
    staged?.release();
  }
}

interface LiveLock {
  /** Holds an exclusive lock on the database file until closed; absent when there is no database. */
  connection: BetterSqlite3.Database | undefined;
  /** The file exists but is not a database SQLite can read. */
  unreadable: boolean;
}

/**
 * Why SQLite's own lock: every connection to a WAL database holds a shared lock on the database
 * file for as long as it is open (not only during a transaction), so the service, idle or busy,
 * keeps an exclusive lock from being granted. The locks are the operating system's (fcntl), so
 * they vanish with the process that held them: unlike a pid file, nothing can go stale after a
 * crash. `locking_mode=EXCLUSIVE` keeps our lock after the transaction that took it, until close.
 */
function lockLiveDatabase(databasePath: string): LiveLock {
  if (!fs.existsSync(databasePath) || fs.statSync(databasePath).size === 0) {
    return { connection: undefined, unreadable: false };
  }
  const connection = new BetterSqlite3(databasePath, { fileMustExist: true, timeout: 200 });
  try {
    connection.pragma("locking_mode = EXCLUSIVE");
    connection.exec("BEGIN EXCLUSIVE");
    connection.exec("COMMIT");
    return { connection, unreadable: false };
  } catch (error) {
    connection.close();
    const code = (error as { code?: string }).code ?? "";
    if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
      throw new RestoreError(
        `${databasePath} is open in another process, most likely the running service: stop it first (Ctrl-C or kill -TERM <pid> for npm start, docker compose stop <service> in Docker), then run the restore again. Nothing was changed.`,
      );
    }
    // A file SQLite cannot read as a database: no service can be serving it either (it refuses to
    // start on one), and its bytes are kept aside below rather than backed up.
    if (code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT")) {
      return { connection: undefined, unreadable: true };
    }
    throw error;
  }
}

/** The backup copied beside the database, verified, durable, and locked until released. */
function stageCopy(source: string, databasePath: string): { path: string; release(): void } {
  const tmpPath = path.join(
    path.dirname(databasePath),
    `.${path.basename(databasePath)}.restore-${process.pid}.tmp`,
  );
  const remove = () => removeWithCompanions(tmpPath);
  remove();
  fs.copyFileSync(source, tmpPath);
  fs.chmodSync(tmpPath, 0o600);
  let copy: BetterSqlite3.Database | undefined;
  try {
    copy = new BetterSqlite3(tmpPath, { fileMustExist: true, timeout: 200 });
    copy.pragma("locking_mode = EXCLUSIVE");
    // A backup is normally in rollback mode already (VACUUM INTO, or normalised after the online
    // backup API); one that is not would need a -wal beside it to be complete.
    copy.pragma("journal_mode = DELETE");
    copy.exec("BEGIN EXCLUSIVE");
    copy.exec("COMMIT");
    assertSound(verifyConnection(copy), `backup ${source}`);
    syncFile(tmpPath);
  } catch (error) {
    copy?.close();
    remove();
    const reason =
      error instanceof BackupError
        ? error.message
        : `backup ${source} is not a sound SQLite database (${(error as Error).message})`;
    throw new RestoreError(`${reason}. Refused: nothing was changed.`, { cause: error });
  }
  const locked = copy;
  return {
    path: tmpPath,
    release() {
      locked.close();
      remove();
    },
  };
}

function keepCurrent(
  live: LiveLock,
  { databasePath, backupDir, now }: { databasePath: string; backupDir: string; now: Date },
): { previous: RestoreResult["previous"]; unreadable: string[] } {
  if (live.connection) {
    try {
      const previous = takeBackup({
        databasePath,
        backupDir,
        kind: "pre-restore",
        now,
        connection: live.connection,
      });
      // Fold the WAL into the old file and drop it, under our lock: nothing of the old database
      // is left for SQLite to replay onto the new one.
      live.connection.pragma("journal_mode = DELETE");
      return { previous, unreadable: [] };
    } catch (error) {
      const code = (error as { code?: string }).code ?? "";
      if (!(error instanceof BackupError) && code !== "SQLITE_NOTADB" && !code.startsWith("SQLITE_CORRUPT")) {
        throw error;
      }
    }
  } else if (!live.unreadable) {
    return { previous: null, unreadable: [] };
  }
  // Corrupt: SQLite cannot copy it, so its bytes are kept as they are, under a name that no listing
  // or restore takes for a backup.
  fs.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const name = {
    database: databaseNameOf(databasePath),
    kind: "pre-restore",
    createdAt: now,
    extension: ".db",
  } as const;
  const base = path.join(backupDir, backupFileName(name).replace(/-pre-restore\.db$/, "-unreadable.db"));
  const kept: string[] = [];
  for (const suffix of ["", "-wal"]) {
    if (!fs.existsSync(`${databasePath}${suffix}`)) continue;
    fs.copyFileSync(`${databasePath}${suffix}`, `${base}${suffix}`);
    syncFile(`${base}${suffix}`);
    kept.push(`${base}${suffix}`);
  }
  syncFile(backupDir);
  return { previous: null, unreadable: kept };
}
