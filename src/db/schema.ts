// Table types for Kysely, one interface per table. Columns are snake_case in SQL and camelCase
// here (Kysely's CamelCasePlugin translates both ways).
import type { Generated, Insertable, Selectable, Updateable } from "kysely";

export interface NotesTable {
  id: Generated<number>;
  title: string;
  body: string;
  /** ISO 8601 UTC, written by the application so every dialect stores the same text. */
  createdAt: string;
  updatedAt: string;
}

export interface SchemaMigrationsTable {
  name: string;
  appliedAt: string;
}

export interface DB {
  notes: NotesTable;
  schemaMigrations: SchemaMigrationsTable;
}

export type Note = Selectable<NotesTable>;
export type NewNote = Insertable<NotesTable>;
export type NoteUpdate = Updateable<NotesTable>;
