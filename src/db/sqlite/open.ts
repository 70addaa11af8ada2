// Opening and closing the SQLite database: the file and its folder, the PRAGMAs a long-running
// web service wants, the Kysely instance over it, and startup failures turned into one clear line.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { Kysely, type SqliteDatabase, SqliteDialect } from "kysely";
import { findNewestBackup } from "../../backups/files.ts";
import type { DB } from "../schema.ts";
import { StorageStartupError } from "../storage.ts";

export type SqliteConnection = BetterSqlite3.Database;

export interface SqliteDb {
  /** Absolute path of the database file. */
  readonly path: string;
  /** The typed query builder over the connection. */
  readonly kysely: Kysely<DB>;
  /** The raw connection, for SQLite-specific work inside src/db/sqlite/ only. */
  readonly sqlite: SqliteConnection;
  /** Optimizes, checkpoints and closes; leaves no -wal or -shm behind. Safe to call twice. */
  close(): void;
}

export interface OpenSqliteOptions {
  path: string;
  /** Where backups live: a failure to open names the newest one found there. */
  backupDir: string;
  busyTimeoutMs: number;
}

/** The name a database's backups carry: its file name without the extension ("app" for app.db). */
export function databaseNameOf(file: string): string {
  return path.basename(file).replace(/\.[^.]*$/, "");
}

// Trade-offs, anchored on Rails 8's and PocketBase's SQLite defaults (see ../shared/SQLITE-NOTES.md).
const PRAGMAS = [
  // NORMAL in WAL mode: a commit survives a crash of this process (kill -9); only an OS crash or
  // power cut can lose the last few transactions. FULL would fsync on every commit.
  "synchronous = NORMAL",
  // Integrity of the schema's REFERENCES clauses; SQLite leaves it off for backward compatibility.
  "foreign_keys = ON",
  // After a checkpoint, shrink the WAL back to 64 MiB rather than keep its high-water mark on disk.
  "journal_size_limit = 67108864",
  // 16 MiB of page cache (negative = KiB): between Rails' 8 MiB and PocketBase's 32 MiB, sized for
  // a small container's memory limit.
  "cache_size = -16000",
  // Memory-mapped reads skip a copy per page; 128 MiB as in Rails.
  "mmap_size = 134217728",
  // Sorts and temporary indexes in memory: faster, and works on a read-only root filesystem.
  "temp_store = MEMORY",
  // Schema objects (views, triggers) may not call functions with side effects: SQLite's advice for
  // applications that might ever open a database file they did not create.
  "trusted_schema = OFF",
];

export function openSqlite({ path: file, backupDir, busyTimeoutMs }: OpenSqliteOptions): SqliteDb {
  const fail = (problem: string): never => {
    throw new StorageStartupError(`${problem} ${describeNewestBackup(backupDir, file)}`);
  };
  prepareFile(file);
  // A new, empty file gets its header on the first write.
  if (fs.statSync(file).size > 0) {
    checkHeader(file, fail);
    probeSchema(file, fail);
  }

  let sqlite: SqliteConnection;
  try {
    sqlite = new BetterSqlite3(file, { fileMustExist: true, timeout: busyTimeoutMs });
  } catch (error) {
    throw new StorageStartupError(`cannot open database ${file}: ${(error as Error).message}`);
  }
  try {
    // Reading the schema touches page 1: a file that is not a database fails here, not on a request.
    sqlite.prepare("SELECT count(*) FROM sqlite_schema").get();
    const mode = sqlite.pragma("journal_mode = WAL", { simple: true });
    if (mode !== "wal") {
      throw new StorageStartupError(
        `SQLite refused WAL mode for ${file} (journal_mode is still "${mode}"): the filesystem lacks the shared memory WAL needs, as network filesystems and some Docker Desktop bind mounts do. Fix: put DATABASE_PATH on a local disk or a named Docker volume.`,
      );
    }
    for (const pragma of PRAGMAS) sqlite.pragma(pragma);
  } catch (error) {
    sqlite.close();
    if (error instanceof StorageStartupError) throw error;
    const { code, message } = error as { code?: string; message: string };
    if (code === "SQLITE_NOTADB" || code?.startsWith("SQLITE_CORRUPT")) {
      fail(`${file} is not a SQLite database or is corrupt (${code}: ${message}); it was left untouched.`);
    }
    if (code?.startsWith("SQLITE_READONLY") || code?.startsWith("SQLITE_CANTOPEN")) {
      throw new StorageStartupError(
        `cannot write to database ${file} or its -wal/-shm files (${code}). ${ownershipAdvice(file)}`,
      );
    }
    throw new StorageStartupError(`cannot open database ${file}: ${code ?? "error"}: ${message}`);
  }

  let closed = false;
  return {
    path: file,
    kysely: createSqliteKysely(() => sqlite),
    sqlite,
    close() {
      if (closed || !sqlite.open) return;
      closed = true;
      try {
        // SQLite's advice for long-lived connections: refresh planner statistics before closing.
        sqlite.pragma("optimize");
        // Fold the WAL into the database so the file alone is complete; close then removes -wal/-shm.
        sqlite.pragma("wal_checkpoint(TRUNCATE)");
      } finally {
        sqlite.close();
      }
    },
  };
}

/**
 * Kysely over whatever connection `connection()` returns when a query runs: a Storage keeps one
 * Kysely (the one its routes hold) across a close and reopen of the file, as an online restore does.
 * No CamelCasePlugin: columns keep their SQL names in TypeScript too (docs/engines.md, "SQLite, the default"). The
 * plugin cost 11-18% of a note read's throughput, and it renames the keys of every object in a row,
 * JSON values included once a dialect parses them (PostgreSQL's json columns).
 */
export function createSqliteKysely(connection: () => SqliteConnection): Kysely<DB> {
  return new Kysely<DB>({ dialect: new SqliteDialect({ database: withStatementCache(connection) }) });
}

// Kysely's SQLite driver calls prepare(sql) for every query it runs: SQLite parses and plans the
// SQL again each time, which costs more than the query itself for a point read by id (see
// docs/performance.md). Routes run the same few SQL strings over and over, so their statements are kept,
// by SQL text, most recently used last; the bound keeps queries whose text varies (IN lists of
// every length) from growing the cache without end. Statements belong to a connection: a new one
// starts an empty cache.
const STATEMENT_CACHE_SIZE = 100;

export function withStatementCache(
  connection: () => SqliteConnection,
  size = STATEMENT_CACHE_SIZE,
): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>();
  let owner: SqliteConnection | undefined;
  return {
    close: () => connection().close(),
    prepare(sql) {
      const sqlite = connection();
      if (sqlite !== owner) {
        cache.clear();
        owner = sqlite;
      }
      const cached = cache.get(sql);
      // A statement still iterating (a Kysely stream() not yet finished) cannot run again: a fresh one can.
      if (cached?.busy) return sqlite.prepare(sql);
      if (cached) {
        cache.delete(sql);
        cache.set(sql, cached);
        return cached;
      }
      const statement = sqlite.prepare(sql);
      cache.set(sql, statement);
      if (cache.size > size) cache.delete(cache.keys().next().value!);
      return statement;
    },
  };
}

/** Creates the folder and, for a new database, an empty file that only its owner can read. */
function prepareFile(file: string): void {
  const dir = path.dirname(file);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST" || code === "ENOTDIR") {
      throw new StorageStartupError(
        `cannot create the database folder ${dir}: a file stands where a folder should be. Fix: move that file, or set DATABASE_PATH elsewhere.`,
      );
    }
    const existing = nearestExisting(dir);
    // A recursive mkdir on a read-only filesystem can report ENOENT rather than EROFS.
    if (code === "EROFS" || isOnReadOnlyFilesystem(existing)) {
      throw new StorageStartupError(
        `cannot create the database folder ${dir}: the filesystem is read-only. Fix: mount a writable volume there, or set DATABASE_PATH to a writable place.`,
      );
    }
    throw new StorageStartupError(
      `cannot create the database folder ${dir} (${code}). ${ownershipAdvice(existing)}`,
    );
  }
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // EACCES: the folder exists but this uid may not even look inside it.
    if (code !== "ENOENT") {
      throw new StorageStartupError(
        `cannot read the database folder ${dir} (${code}). ${ownershipAdvice(dir)}`,
      );
    }
  }
  if (stat?.isDirectory()) {
    throw new StorageStartupError(
      `DATABASE_PATH ${file} is a directory, not a database file. Fix: set DATABASE_PATH to a file inside it, such as ${path.join(file, "app.db")}.`,
    );
  }
  if (stat && !stat.isFile()) {
    throw new StorageStartupError(`DATABASE_PATH ${file} is not a regular file.`);
  }
  // SQLite creates -wal and -shm beside the database, so the folder must be writable too.
  for (const target of [dir, ...(stat ? [file] : []), `${file}-wal`, `${file}-shm`]) {
    try {
      fs.accessSync(target, fs.constants.W_OK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT") continue;
      if (code === "EROFS") {
        throw new StorageStartupError(
          `${target} is on a read-only filesystem. Fix: mount a writable volume there, or set DATABASE_PATH to a writable place.`,
        );
      }
      throw new StorageStartupError(`cannot write to ${target}. ${ownershipAdvice(target)}`);
    }
  }
  if (!stat) {
    try {
      fs.closeSync(
        fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600),
      );
    } catch (error) {
      // Another process created it first: that is fine, it is a database now or will be.
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
}

// https://www.sqlite.org/fileformat.html#the_database_header
function checkHeader(file: string, fail: (problem: string) => never): void {
  const { size } = fs.statSync(file);
  const header = Buffer.alloc(100);
  const fd = fs.openSync(file, "r");
  let read: number;
  try {
    read = fs.readSync(fd, header, 0, 100, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (read < 100 || header.toString("latin1", 0, 16) !== "SQLite format 3\u0000") {
    fail(
      `${file} is not a SQLite database (its first bytes are not the SQLite header); it was left untouched.`,
    );
  }
  const rawPageSize = header.readUInt16BE(16);
  const pageSize = rawPageSize === 1 ? 65536 : rawPageSize;
  const pageCount = header.readUInt32BE(28);
  // The in-header size is only authoritative when the change counter matches "version-valid-for".
  const sizeIsValid = pageCount > 0 && header.readUInt32BE(24) === header.readUInt32BE(92);
  if (sizeIsValid && pageCount * pageSize > size) {
    fail(
      `${file} is truncated: its header describes ${pageCount * pageSize} bytes but the file holds ${size}; it was left untouched.`,
    );
  }
}

// Reading the schema touches page 1, so most damage shows here. Through a read-only connection:
// closing a read-write one would checkpoint the -wal into the damaged file and delete it, changing
// the very file the operator has to inspect or rescue.
function probeSchema(file: string, fail: (problem: string) => never): void {
  // Even a read-only connection creates an empty -wal and -shm for a WAL database: remove those again.
  const created = [`${file}-wal`, `${file}-shm`].filter((companion) => !fs.existsSync(companion));
  let probe: SqliteConnection | undefined;
  try {
    probe = new BetterSqlite3(file, { readonly: true, fileMustExist: true });
    probe.prepare("SELECT count(*) FROM sqlite_schema").get();
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    if (code === "SQLITE_NOTADB" || code?.startsWith("SQLITE_CORRUPT")) {
      probe?.close();
      for (const companion of created) fs.rmSync(companion, { force: true });
      fail(`${file} is not a SQLite database or is corrupt (${code}: ${message}); it was left untouched.`);
    }
    // Anything else (a lock, a permission) is for the read-write open below to report.
  } finally {
    probe?.close();
  }
}

function describeNewestBackup(backupDir: string, file: string): string {
  let newest: string | undefined;
  try {
    newest = findNewestBackup(backupDir, databaseNameOf(file))?.path;
  } catch {
    // An unreadable backup folder must not hide the original problem.
  }
  return newest
    ? `Newest backup: ${newest} (restore it with: npm run db:restore -- --latest).`
    : `No backup found in ${backupDir}.`;
}

function ownershipAdvice(target: string): string {
  const uid = process.getuid?.();
  let owner = "unknown";
  try {
    owner = String(fs.statSync(target).uid);
  } catch {
    // keep "unknown"
  }
  return `${target} is owned by uid ${owner}; this process runs as uid ${uid}. Fix: make it writable for uid ${uid} (chown -R ${uid} ${target}, or scripts/fix-permissions.sh for Docker volumes), or set DATABASE_PATH to a writable place.`;
}

function isOnReadOnlyFilesystem(target: string): boolean {
  try {
    fs.accessSync(target, fs.constants.W_OK);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EROFS";
  }
}

function nearestExisting(dir: string): string {
  let current = dir;
  while (!fs.existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}
