// Table types for Kysely, one interface per table, with the columns' SQL names: one name for a
// column in migrations, queries, raw `sql` fragments and any other dialect. The HTTP layer maps
// rows to its camelCase JSON explicitly (see toNoteDto in src/http/notes.ts).
import type { Generated, Insertable, Selectable, Updateable } from "kysely";

export interface NotesTable {
  id: Generated<number>;
  title: string;
  body: string;
  /** ISO 8601 UTC, written by the application so every dialect stores the same text. */
  created_at: string;
  updated_at: string;
}

/** Where the migrator records applied migrations, in the same transaction as their changes. */
export const MIGRATIONS_TABLE = "schema_migrations";

export interface SchemaMigrationsTable {
  name: string;
  applied_at: string;
}

export interface DB {
  notes: NotesTable;
  schema_migrations: SchemaMigrationsTable;
}

export type Note = Selectable<NotesTable>;
export type NewNote = Insertable<NotesTable>;
export type NoteUpdate = Updateable<NotesTable>;
