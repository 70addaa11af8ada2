// PostgreSQL backups: `pg_dump -Fc` (a consistent snapshot, taken while the service reads and
// writes), verified by reading every entry back, made durable, then given its final name. And the
// checks behind `db:verify`, for a dump file or for the live database.
import fs from "node:fs";
import path from "node:path";
import { type BackupFile, installBackupFile, startBackupFile } from "../../backups/files.ts";
import { BackupError, type BackupOptions, type Verdict, verdictOf } from "../storage.ts";
import { type SessionOptions, withSession } from "./session.ts";
import { firstLine, type PgTools, runTool } from "./tools.ts";
import { type DatabaseUrl, libpqConnection } from "./url.ts";

/** What the dump, restore and verify code needs to know about the database it works on. */
export interface PostgresTarget {
  url: DatabaseUrl;
  /** For the engine's own short sessions (checks, catalog reads, CREATE DATABASE). */
  sessions: SessionOptions;
  /** The database's name in its backups' file names. */
  backupName: string;
  /** The URL without its password. */
  shown: string;
  /** pg_dump, pg_restore and psql for this server's version (see tools.ts). */
  tools(): Promise<PgTools>;
}

/** The one check a dump gets, as `db:backup` and `db:restore` name it. */
export const DUMP_CHECK = "pg_restore (every entry read)";

/** The name a database gets in backup file names: the characters the name pattern accepts. */
export function backupNameOf(database: string): string {
  return database.replace(/[^A-Za-z0-9_.-]/g, "_");
}

export async function takeDump(
  target: PostgresTarget,
  { backupDir, kind, label, now = new Date(), signal }: BackupOptions,
): Promise<BackupFile> {
  signal?.throwIfAborted();
  const tools = await target.tools();
  const pending = startBackupFile(backupDir, {
    database: target.backupName,
    kind,
    label,
    createdAt: now,
    extension: ".dump",
  });
  try {
    const { dbname, env } = libpqConnection(target.url);
    const dumped = await runTool(
      tools.pgDump,
      ["--format=custom", `--file=${pending.tmpPath}`, "--no-password", `--dbname=${dbname}`],
      env,
      { signal },
    );
    if (dumped.code !== 0) {
      throw new BackupError(`pg_dump of ${target.shown} failed: ${firstLine(dumped.stderr)}`);
    }
    const verdict = await verifyDumpFile(tools, pending.tmpPath, signal);
    if (!verdict.ok) {
      throw new BackupError(
        `backup of ${target.shown} failed verification: ${verdict.checks.flatMap((c) => c.findings).join("; ")}`,
      );
    }
    await makeDurable(pending.tmpPath);
    return installBackupFile(pending);
  } catch (error) {
    fs.rmSync(pending.tmpPath, { force: true });
    throw error;
  }
}

/**
 * Reads every entry of a custom-format dump, data included, as a restore would (`pg_restore -f
 * /dev/null`). `pg_restore --list` reads only the table of contents: a dump cut short or with
 * damaged data lists fine and fails only when restored.
 */
export async function verifyDumpFile(tools: PgTools, file: string, signal?: AbortSignal): Promise<Verdict> {
  const result = await runTool(tools.pgRestore, ["--file=/dev/null", file], {}, { signal });
  return verdictOf([
    {
      name: DUMP_CHECK,
      findings: result.code === 0 ? [] : [`${path.basename(file)}: ${firstLine(result.stderr)}`],
    },
  ]);
}

/**
 * The live database: every row and definition read through pg_dump (to /dev/null), which fails on
 * a page or TOAST value the server cannot read; and, where the amcheck extension is installed,
 * bt_index_check of every B-tree index (an index that disagrees with its ordering rules).
 */
export async function verifyLiveDatabase(target: PostgresTarget, database?: string): Promise<Verdict> {
  const tools = await target.tools();
  const { dbname, env } = libpqConnection(target.url, database);
  const dumped = await runTool(
    tools.pgDump,
    ["--format=plain", "--file=/dev/null", "--no-password", `--dbname=${dbname}`],
    env,
  );
  const checks: Verdict["checks"] = [
    { name: "pg_dump (every row read)", findings: dumped.code === 0 ? [] : [firstLine(dumped.stderr)] },
  ];
  const indexFindings = await withSession(
    target.sessions,
    async (client) => {
      const installed = await client.query("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'");
      if (installed.rows.length === 0) return undefined;
      const { rows } = await client.query<{ name: string }>(
        `SELECT c.oid::regclass::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_am a ON a.oid = c.relam
          WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid
            AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)`,
      );
      const findings: string[] = [];
      for (const { name } of rows) {
        try {
          await client.query("SELECT bt_index_check($1::regclass)", [name]);
        } catch (error) {
          findings.push(`${name}: ${(error as Error).message}`);
        }
      }
      return findings;
    },
    database,
  );
  if (indexFindings) checks.push({ name: "amcheck (bt_index_check)", findings: indexFindings });
  return verdictOf(checks);
}

// Owner-only (the process's umask already made it so) and fsynced through libuv's thread pool, so
// the event loop goes on serving while the disk flushes a large file.
async function makeDurable(file: string): Promise<void> {
  await fs.promises.chmod(file, 0o600);
  const handle = await fs.promises.open(file, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
