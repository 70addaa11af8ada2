// Once per `npm test`: say in one line that the PostgreSQL side is skipped and how to run it, or,
// when TEST_DATABASE_URL is set, fail at once with one line if it cannot be used.

export default async function setup(): Promise<void> {
  const raw = process.env.TEST_DATABASE_URL;
  if (!raw) {
    console.log(
      "PostgreSQL side skipped: set TEST_DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/postgres (a role that may CREATE DATABASE) to run every storage suite on PostgreSQL too, e.g. pg_virtualenv -v 15 sh -c 'TEST_DATABASE_URL=postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/postgres npm test'",
    );
    return;
  }
  // Imported here: without TEST_DATABASE_URL, the run never loads pg.
  const { createDatabase, dropDatabase, withSession } = await import("../src/db/postgres/session.ts");
  const { parseDatabaseUrl } = await import("../src/db/postgres/url.ts");
  const url = parseDatabaseUrl(raw);
  if (typeof url === "string") throw new Error(`TEST_DATABASE_URL ${url}`);
  const session = {
    statementTimeoutMs: 0,
    lockTimeoutMs: 0,
    idleInTransactionTimeoutMs: 0,
    applicationName: "tests:setup",
  };
  // Creating and dropping one database proves the role can do what every test does.
  await withSession({ url, session, connectTimeoutMs: 5_000 }, async (client) => {
    const name = `test_setup_${process.pid}`;
    await dropDatabase(client, name);
    await createDatabase(client, name);
    await dropDatabase(client, name);
  });
}
