// The PostgreSQL side of the bench (--engine postgres): a database of its own on the server the
// admin URL names, migrated by the service's own migrator and filled in one statement, dropped at
// the end. Imported only with --engine postgres, so a SQLite run never loads pg.
import { pino } from "pino";
import { loadConfig } from "../../src/config.ts";
import { runMigrations } from "../../src/db/migrator.ts";
import { createPostgresEngine } from "../../src/db/postgres/engine.ts";
import { createDatabase, dropDatabase, withSession } from "../../src/db/postgres/session.ts";
import { type DatabaseUrl, formatDatabaseUrl, parseDatabaseUrl } from "../../src/db/postgres/url.ts";

export interface PostgresFixture {
  /** DATABASE_URL of the bench's database. */
  url: string;
  serverVersion: string;
  drop(): Promise<void>;
}

const SESSION = {
  statementTimeoutMs: 0,
  lockTimeoutMs: 0,
  idleInTransactionTimeoutMs: 0,
  applicationName: "bench",
};

export async function buildPostgresFixture({
  adminUrl,
  notes,
  bodyBytes,
  migrationsDir,
  backupDir,
}: {
  adminUrl: string;
  notes: number;
  bodyBytes: number;
  migrationsDir: string;
  backupDir: string;
}): Promise<PostgresFixture> {
  const admin = parseDatabaseUrl(adminUrl);
  if (typeof admin === "string") throw new Error(`--database-url ${admin}`);
  const sessions = { url: admin, session: SESSION, connectTimeoutMs: 5_000 };
  const name = `bench_${process.pid}`;
  const serverVersion = await withSession(sessions, async (client) => {
    await dropDatabase(client, name);
    await createDatabase(client, name);
    const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    return rows[0]!.v.split(" ")[0]!;
  });
  const url = formatDatabaseUrl(admin, { database: name });
  const drop = () => withSession(sessions, (client) => dropDatabase(client, name));
  try {
    await migrateAndFill(url, admin, { notes, bodyBytes, migrationsDir, backupDir });
  } catch (error) {
    await drop().catch(() => {});
    throw error;
  }
  return { url, serverVersion, drop };
}

async function migrateAndFill(
  url: string,
  admin: DatabaseUrl,
  options: { notes: number; bodyBytes: number; migrationsDir: string; backupDir: string },
): Promise<void> {
  const { postgres: settings } = loadConfig({ DATABASE_URL: url });
  const storage = await createPostgresEngine({ url, settings }).open();
  try {
    await runMigrations({
      storage,
      migrationsDir: options.migrationsDir,
      backupDir: options.backupDir,
      logger: pino({ level: "silent" }),
    });
  } finally {
    await storage.close();
  }
  if (options.notes === 0) return;
  await withSession(
    { url: admin, session: SESSION, connectTimeoutMs: 5_000 },
    async (client) => {
      // The same shape as the SQLite fixture: ids 1..notes, a title, a body of bodyBytes.
      await client.query(
        `INSERT INTO notes (title, body, created_at, updated_at)
         SELECT 'note number ' || i, substr(repeat(md5(i::text), ($2::int / 32) + 2), 1, $2::int), $3, $3
           FROM generate_series(1, $1::int) AS i`,
        [options.notes, options.bodyBytes, new Date(0).toISOString()],
      );
      await client.query("VACUUM ANALYZE notes");
    },
    (parseDatabaseUrl(url) as DatabaseUrl).database,
  );
}
