// The example resource: notes, with keyset paging. Copy this file to start a new resource: the
// schemas, then each operation's declaration (its entry in /openapi.json), then the routes, which
// validate at the edge with those same schemas, run one Kysely query and send one response; errors
// are thrown.
import type { Kysely, Selectable } from "kysely";
import { z } from "zod";
import type { DB, NotesTable } from "../db/schema.ts";
import { type ApiOperation, type ApiRouter, apiRouter, errorResponse } from "./api-router.ts";
import { HttpError } from "./errors.ts";

const idParams = z.object({
  id: z
    .string()
    .regex(/^[1-9]\d{0,15}$/, { error: "expected a positive integer id" })
    .transform(Number)
    .meta({ description: "The note's id", example: "1" }),
});

// A lone UTF-16 surrogate ("\ud800", legal in JSON) has no UTF-8 form: SQLite would store U+FFFD
// instead, and the note would silently differ from what the client sent. Refuse it. NUL ("\u0000")
// too: PostgreSQL's text cannot hold it (22021), and a note must be storable on either engine.
const text = () =>
  z
    .string()
    .refine((value) => value.isWellFormed(), { error: "contains a lone surrogate" })
    .refine((value) => !value.includes("\0"), { error: "contains a NUL character (\\u0000)" });
const title = text().min(1).max(200);
const body = text().max(10_000);

const createBody = z.strictObject({ title, body: body.default("") }).meta({ id: "NewNote" });

const updateBody = z
  .strictObject({ title, body })
  .partial()
  .refine((v) => v.title !== undefined || v.body !== undefined, { error: "give title, body or both" })
  .meta({ id: "NoteChanges", description: "The fields to change: title, body or both" });

// The cursor is opaque to clients: base64url of the last id they saw.
const cursor = z
  .string()
  .max(32)
  .transform((value, ctx) => {
    const id = Buffer.from(value, "base64url").toString("utf8");
    if (!/^[1-9]\d{0,15}$/.test(id)) {
      ctx.addIssue({ code: "custom", message: "not a cursor returned by this API" });
      return z.NEVER;
    }
    return Number(id);
  });

const listQuery = z.object({
  limit: z
    .string()
    .regex(/^\d{1,3}$/, { error: "expected a whole number from 1 to 100" })
    .transform(Number)
    .pipe(z.number().min(1).max(100))
    .default(20)
    .meta({ description: "Notes per page, from 1 to 100; 20 when omitted", example: "20" }),
  cursor: cursor.optional().meta({ description: "The previous page's nextCursor, for the page after it" }),
});

const encodeCursor = (id: number) => Buffer.from(String(id), "utf8").toString("base64url");

// What clients get back: a stored note under camelCase names (toNoteDto maps the row).
const noteDto = z
  .strictObject({
    id: z.number().int().positive(),
    title,
    body,
    createdAt: z.iso.datetime(),
    updatedAt: z.iso.datetime(),
  })
  .meta({ id: "Note" });

const notePage = z
  .strictObject({
    items: z.array(noteDto).meta({ description: "Newest first" }),
    nextCursor: z
      .string()
      .nullable()
      .meta({ description: "Pass it as ?cursor= for the next page; null on the last page" }),
  })
  .meta({ id: "NotePage" });

const noSuchNote = errorResponse("No note has this id (not_found)", "not_found");

const createNote: ApiOperation = {
  operationId: "createNote",
  summary: "Create a note",
  body: createBody,
  responses: {
    201: {
      description: "The note as stored",
      body: noteDto,
      headers: z.object({
        Location: z.string().meta({ description: "The note's URL", example: "/api/notes/1" }),
      }),
    },
  },
};

const listNotes: ApiOperation = {
  operationId: "listNotes",
  summary: "List notes, newest first, a page at a time",
  query: listQuery,
  responses: { 200: { description: "One page of notes", body: notePage } },
};

const getNote: ApiOperation = {
  operationId: "getNote",
  summary: "Read a note",
  params: idParams,
  responses: { 200: { description: "The note", body: noteDto }, 404: noSuchNote },
};

const updateNote: ApiOperation = {
  operationId: "updateNote",
  summary: "Change a note's title, body or both",
  params: idParams,
  body: updateBody,
  responses: { 200: { description: "The note as changed", body: noteDto }, 404: noSuchNote },
};

const deleteNote: ApiOperation = {
  operationId: "deleteNote",
  summary: "Delete a note",
  params: idParams,
  responses: { 204: { description: "Deleted; its id is never used again" }, 404: noSuchNote },
};

type NoteRow = Selectable<NotesTable>;

export function toNoteDto(note: NoteRow): z.output<typeof noteDto> {
  return {
    id: note.id,
    title: note.title,
    body: note.body,
    createdAt: note.created_at,
    updatedAt: note.updated_at,
  };
}

export function notesRouter(db: Kysely<DB>): ApiRouter {
  const router = apiRouter({ name: "notes", description: "The example resource: short text notes" });
  const find = (id: number) => db.selectFrom("notes").selectAll().where("id", "=", id).executeTakeFirst();
  const missing = (id: number) => new HttpError(404, "not_found", `note ${id} does not exist`);

  router.post("/", createNote, async (req, res) => {
    const input = createBody.parse(req.body);
    const now = new Date().toISOString();
    const note = await db
      .insertInto("notes")
      .values({ ...input, created_at: now, updated_at: now })
      .returningAll()
      .executeTakeFirstOrThrow();
    res.status(201).location(`${req.baseUrl}/${note.id}`).json(toNoteDto(note));
  });

  router.get("/", listNotes, async (req, res) => {
    const { limit, cursor: after } = listQuery.parse(req.query);
    let query = db
      .selectFrom("notes")
      .selectAll()
      .orderBy("id", "desc")
      .limit(limit + 1);
    if (after !== undefined) query = query.where("id", "<", after);
    const rows = await query.execute();
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    res.json({
      items: page.map(toNoteDto),
      nextCursor: rows.length > limit && last ? encodeCursor(last.id) : null,
    } satisfies z.output<typeof notePage>);
  });

  router.get("/:id", getNote, async (req, res) => {
    const { id } = idParams.parse(req.params);
    const note = await find(id);
    if (!note) throw missing(id);
    res.json(toNoteDto(note));
  });

  router.patch("/:id", updateNote, async (req, res) => {
    const { id } = idParams.parse(req.params);
    const changes = updateBody.parse(req.body);
    const note = await db
      .updateTable("notes")
      .set({ ...changes, updated_at: new Date().toISOString() })
      .where("id", "=", id)
      .returningAll()
      .executeTakeFirst();
    if (!note) throw missing(id);
    res.json(toNoteDto(note));
  });

  router.delete("/:id", deleteNote, async (req, res) => {
    const { id } = idParams.parse(req.params);
    const result = await db.deleteFrom("notes").where("id", "=", id).executeTakeFirst();
    if (result.numDeletedRows === 0n) throw missing(id);
    res.status(204).end();
  });

  return router;
}
