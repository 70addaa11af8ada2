import request from "supertest";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createEngineTestApp, describeEngines, type EngineTestApp } from "./engines.ts";

let t: EngineTestApp;

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const create = (title: string, body?: string) =>
  request(t.app)
    .post("/api/notes")
    .send(body === undefined ? { title } : { title, body })
    .expect(201);

describeEngines("notes", (engine) => {
  beforeEach(async () => {
    t = await createEngineTestApp(engine);
  });
  afterEach(() => t.close());

  it("creates a note: 201, a Location header and the stored note", async () => {
    const res = await create("first", "hello");
    expect(res.body).toEqual({
      id: 1,
      title: "first",
      body: "hello",
      createdAt: expect.stringMatching(ISO),
      updatedAt: res.body.createdAt,
    });
    expect(res.headers.location).toBe("/api/notes/1");
    const stored = await request(t.app).get(res.headers.location!).expect(200);
    expect(stored.body).toEqual(res.body);
  });

  it("defaults body to an empty string", async () => {
    expect((await create("no body")).body.body).toBe("");
  });

  it("stores SQL and HTML verbatim and returns them as JSON", async () => {
    const title = `'); DROP TABLE notes; -- <script>alert(1)</script>`;
    const body = `" OR 1=1 -- \u0001 ünïcödé 🎉`;
    const { body: note } = await create(title, body);
    const res = await request(t.app)
      .get(`/api/notes/${note.id}`)
      .expect("Content-Type", /application\/json/)
      .expect(200);
    expect(res.body).toMatchObject({ title, body });
  });

  it.each([
    [{}, "title"],
    [{ title: "" }, "title"],
    [{ title: "x".repeat(201) }, "title"],
    [{ title: 42 }, "title"],
    [{ title: "ok", body: "x".repeat(10_001) }, "body"],
    [{ title: "ok", extra: true }, ""],
    [{ title: "nul \u0000 inside" }, "title"],
  ])("rejects %j with validation_failed and stores nothing", async (payload, field) => {
    const res = await request(t.app).post("/api/notes").send(payload).expect(400);
    expect(res.body.error.code).toBe("validation_failed");
    expect(res.body.error.details[0].path.join(".")).toBe(field);
    expect((await request(t.app).get("/api/notes")).body.items).toEqual([]);
  });

  it("accepts a title of exactly 200 characters and a body of 10,000", async () => {
    await create("x".repeat(200), "y".repeat(10_000));
  });

  it("answers 404 not_found for a missing note, and 400 for an id that is not one", async () => {
    const missing = await request(t.app).get("/api/notes/999").expect(404);
    expect(missing.body.error).toMatchObject({ code: "not_found", message: "note 999 does not exist" });
    for (const bad of ["abc", "0", "-1", "1.5", "99999999999999999999"]) {
      const res = await request(t.app).get(`/api/notes/${bad}`).expect(400);
      expect(res.body.error.code).toBe("validation_failed");
    }
  });

  it("updates title and body with PATCH, bumping updatedAt only", async () => {
    const { body: note } = await create("before", "body");
    await new Promise((resolve) => setTimeout(resolve, 2)); // timestamps have millisecond resolution
    const res = await request(t.app).patch(`/api/notes/${note.id}`).send({ title: "after" }).expect(200);
    expect(res.body).toMatchObject({ id: note.id, title: "after", body: "body", createdAt: note.createdAt });
    expect(res.body.updatedAt > note.updatedAt).toBe(true);
    await request(t.app).patch(`/api/notes/${note.id}`).send({}).expect(400);
    await request(t.app).patch(`/api/notes/${note.id}`).send({ title: "" }).expect(400);
    await request(t.app).patch("/api/notes/999").send({ title: "x" }).expect(404);
    expect((await request(t.app).get(`/api/notes/${note.id}`)).body.title).toBe("after");
  });

  it("deletes with 204, then answers 404, and never reuses the id", async () => {
    const { body: a } = await create("a");
    const { body: b } = await create("b");
    await request(t.app).delete(`/api/notes/${b.id}`).expect(204, "");
    await request(t.app).delete(`/api/notes/${b.id}`).expect(404);
    await request(t.app).get(`/api/notes/${b.id}`).expect(404);
    const { body: c } = await create("c");
    expect(c.id).toBeGreaterThan(b.id);
    expect(a.id).toBeLessThan(b.id);
  });

  it("pages newest first with an opaque cursor until nextCursor is null", async () => {
    for (let i = 1; i <= 7; i++) await create(`note ${i}`);
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: request.Response = await request(t.app)
        .get("/api/notes")
        .query({ limit: 3, ...(cursor ? { cursor } : {}) })
        .expect(200);
      seen.push(...res.body.items.map((n: { id: number }) => n.id));
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual([7, 6, 5, 4, 3, 2, 1]);
    expect(pages).toBe(3);
  });

  it("defaults to 20 items and rejects limits outside 1..100 and foreign cursors", async () => {
    for (let i = 0; i < 22; i++) await create(`n${i}`);
    const res = await request(t.app).get("/api/notes").expect(200);
    expect(res.body.items).toHaveLength(20);
    expect(res.body.nextCursor).toEqual(expect.any(String));
    for (const query of [
      "limit=0",
      "limit=101",
      "limit=abc",
      "limit=1&limit=2",
      "cursor=%%%",
      "cursor=bm90LWFuLWlk",
    ]) {
      const bad = await request(t.app).get(`/api/notes?${query}`).expect(400);
      expect(bad.body.error.code, query).toBe("validation_failed");
    }
  });
});
