import { type Kysely, sql } from "kysely";
import type { MigrationContext } from "../src/db/migrator.ts";

export async function up(db: Kysely<any>, { ids }: MigrationContext): Promise<void> {
  await db.schema
    .createTable("notes")
    // Assigned by the database and never reused after a delete, so a URL never points at another
    // note and "newest first" is simply "highest id first".
    .addColumn("id", ids.type, ids.primaryKey)
    .addColumn("title", "text", (c) => c.notNull().check(sql`length(title) BETWEEN 1 AND 200`))
    .addColumn("body", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("created_at", "text", (c) => c.notNull())
    .addColumn("updated_at", "text", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("notes").execute();
}
