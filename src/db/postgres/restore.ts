// PostgreSQL restore: a verified dump replaces the contents of the live database in one
// transaction, after the database as it was is kept as a pre-restore dump, and never while another
// session is connected to it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { MIGRATIONS_TABLE } from "../schema.ts";
import { RestoreError, type RestoreOptions, type RestoreResult } from "../storage.ts";
import { type PostgresTarget, takeDump, verifyDumpFile, verifyLiveDatabase } from "./dump.ts";
import { holdsTables, otherSessions, withSession } from "./session.ts";
import { firstLine, type PgTools } from "./tools.ts";
import { libpqConnection } from "./url.ts";

/**
 * Drops every object of the current schema (normally public) that no extension owns, before the
 * dump's own statements recreate what it holds: `pg_restore --clean` drops only what is in the
 * dump, so a table a later migration added would survive the restore and make that migration fail
 * when it runs again. Indexes, constraints, triggers and owned sequences go with their tables.
 */
const DROP_CURRENT_SCHEMA = `DO $$
DECLARE
  statement text;
BEGIN
  FOR statement IN
    SELECT format('DROP %s IF EXISTS %s CASCADE',
             CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                            WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.oid::regclass)
      FROM pg_class c
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    UNION ALL
    SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)
      FROM pg_proc p
     WHERE p.pronamespace = current_schema()::regnamespace
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('DROP TYPE IF EXISTS %s CASCADE', t.oid::regtype)
      FROM pg_type t
     WHERE t.typnamespace = current_schema()::regnamespace
       AND (t.typtype IN ('e', 'd', 'r')
            OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                          AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE statement;
  END LOOP;
END $$`;

/**
 * 1. verify the dump (every entry read): a bad one is refused before anything changes;
 * 2. refuse while any other session is connected to the database;
 * 3. keep the database as it is as a pre-restore dump (verified like any other);
 * 4. in ONE transaction (psql --single-transaction): drop the current schema's objects, then run
 *    the dump's statements (pg_restore --clean --if-exists) — any error rolls all of it back;
 * 5. read the restored database back (verifyLiveDatabase).
 */
export async function restoreDump(
  target: PostgresTarget,
  { backupDir, source, now = new Date() }: RestoreOptions,
): Promise<RestoreResult> {
  const from = path.resolve(source);
  if (!fs.existsSync(from)) throw new RestoreError(`no backup at ${from}; nothing was changed.`);
  const tools = await target.tools();
  const verdict = await verifyDumpFile(tools, from);
  if (!verdict.ok) {
    const finding = verdict.checks.flatMap((c) => c.findings).join("; ");
    throw new RestoreError(
      `backup ${from} is not a complete pg_dump archive (${finding}). Refused: nothing was changed.`,
    );
  }
  const { database } = target.url;
  const holdsData = await withSession(target.sessions, async (client) => {
    const others = await otherSessions(client);
    if (others.count > 0) {
      throw new RestoreError(
        `database "${database}" has ${others.count} other session(s) connected (${others.names.join(", ")}), most likely the running service: stop it first (Ctrl-C or kill -TERM <pid> for npm start, docker compose stop app in Docker), or end them with SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${database.replaceAll("'", "''")}' AND pid <> pg_backend_pid(); then run the restore again. Nothing was changed.`,
      );
    }
    return holdsTables(client, MIGRATIONS_TABLE);
  });
  const previous = holdsData ? await takeDump(target, { backupDir, kind: "pre-restore", now }) : null;

  await replaceContents(target, tools, from);
  const check = await verifyLiveDatabase(target);
  if (!check.ok) {
    throw new RestoreError(
      `restored ${target.shown} from ${path.basename(from)}, but reading it back failed: ${check.checks.flatMap((c) => c.findings).join("; ")}${previous ? `. The database as it was: ${previous.path}` : ""}`,
    );
  }
  return { source: from, target: target.shown, previous, notes: [] };
}

/** pg_restore's statements piped into psql, after the drop, all in one transaction. */
function replaceContents(target: PostgresTarget, tools: PgTools, dump: string): Promise<void> {
  const { dbname, env } = libpqConnection(target.url);
  const childEnv = { ...process.env, ...env };
  return new Promise((resolve, reject) => {
    const restore = spawn(tools.pgRestore, ["--clean", "--if-exists", "--no-owner", "--file=-", dump], {
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const psql = spawn(
      tools.psql,
      [
        "--no-psqlrc",
        "--quiet",
        "--single-transaction",
        "--set=ON_ERROR_STOP=1",
        "--output=/dev/null",
        "--no-password",
        `--dbname=${dbname}`,
        `--command=${DROP_CURRENT_SCHEMA}`,
        "--file=-",
      ],
      { env: childEnv, stdio: ["pipe", "ignore", "pipe"] },
    );
    // Ended by hand: psql commits when its input ends, so a pg_restore that fails half-way must
    // never end it. psql is killed instead, and its transaction dies with it.
    restore.stdout.pipe(psql.stdin, { end: false });
    restore.once("close", (code) => {
      if (code === 0) psql.stdin.end();
      else psql.kill("SIGKILL");
    });
    // psql stopping at an error closes its input: the writer's EPIPE is not the error to report.
    psql.stdin.on("error", () => {});
    const errors = { restore: "", psql: "" };
    restore.stderr.setEncoding("utf8").on("data", (c: string) => (errors.restore += c));
    psql.stderr.setEncoding("utf8").on("data", (c: string) => (errors.psql += c));
    const exited = (child: typeof restore | typeof psql) =>
      new Promise<number | null>((done) => {
        child.once("error", reject);
        child.once("close", done);
      });
    void Promise.all([exited(restore), exited(psql)]).then(([restoreCode, psqlCode]) => {
      if (psqlCode === 0 && restoreCode === 0) {
        resolve();
        return;
      }
      const why = psqlCode !== 0 ? firstLine(errors.psql) : firstLine(errors.restore);
      reject(
        new RestoreError(
          `restoring ${path.basename(dump)} into ${target.shown} failed and was rolled back, the database is unchanged: ${why}`,
        ),
      );
    });
  });
}
