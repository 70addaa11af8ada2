import { sql } from "kysely";
import request from "supertest";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createEngineTestApp, describeEngines, type EngineTestApp } from "./engines.ts";

let t: EngineTestApp;
const onEngine = (engine: Parameters<typeof createEngineTestApp>[0]) => {
  beforeEach(async () => {
    t = await createEngineTestApp(engine, { BODY_LIMIT: "1kb" });
  });
  afterEach(() => t.close());
};

function expectErrorShape(body: unknown, code: string) {
  expect(body).toEqual({
    error: {
      code,
      message: expect.any(String),
      requestId: expect.any(String),
      ...((body as { error: { details?: unknown } }).error.details === undefined
        ? {}
        : { details: expect.anything() }),
    },
  });
}

describeEngines("errors", (engine) => {
  onEngine(engine);

  it("answers bad_json 400 for malformed JSON", async () => {
    const res = await request(t.app)
      .post("/api/notes")
      .set("Content-Type", "application/json")
      .send('{"title": ')
      .expect(400);
    expectErrorShape(res.body, "bad_json");
  });

  it("answers validation_failed 400 with zod's issues as details", async () => {
    const res = await request(t.app).post("/api/notes").send({ title: 7 }).expect(400);
    expectErrorShape(res.body, "validation_failed");
    expect(res.body.error.details).toEqual([
      expect.objectContaining({ path: ["title"], message: expect.any(String) }),
    ]);
  });

  it("answers unsupported_media_type 415 for a body that is not JSON", async () => {
    for (const type of [
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
    ]) {
      const res = await request(t.app)
        .post("/api/notes")
        .set("Content-Type", type)
        .send("title=x")
        .expect(415);
      expectErrorShape(res.body, "unsupported_media_type");
    }
  });

  it("answers payload_too_large 413 above BODY_LIMIT", async () => {
    const res = await request(t.app)
      .post("/api/notes")
      .send({ title: "x", body: "y".repeat(2000) })
      .expect(413);
    expectErrorShape(res.body, "payload_too_large");
  });

  it("answers not_found 404 for an unknown route, in the same shape", async () => {
    const res = await request(t.app).get("/nope").expect(404);
    expectErrorShape(res.body, "not_found");
  });

  it("answers internal 500 without a stack, SQL or path, and logs the cause", async () => {
    await sql`DROP TABLE notes`.execute(t.storage.kysely);
    const res = await request(t.app).get("/api/notes").expect(500);
    expect(res.body.error).toEqual({
      code: "internal",
      message: "internal server error",
      requestId: expect.any(String),
    });
    expect(JSON.stringify(res.body)).not.toMatch(/notes|SELECT|at |\//);
  });

  it("maps a constraint violation to 409 conflict", async () => {
    await sql`CREATE UNIQUE INDEX one_title ON notes (title)`.execute(t.storage.kysely);
    await request(t.app).post("/api/notes").send({ title: "same" }).expect(201);
    const res = await request(t.app).post("/api/notes").send({ title: "same" }).expect(409);
    expectErrorShape(res.body, "conflict");
  });
});

describe("request ids", () => {
  onEngine("sqlite");

  it("makes one and echoes it in the response and the error body", async () => {
    const res = await request(t.app).get("/nope");
    expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body.error.requestId).toBe(res.headers["x-request-id"]);
  });

  it("keeps a sane incoming X-Request-Id", async () => {
    const res = await request(t.app).get("/health/live").set("X-Request-Id", "edge-123.abc");
    expect(res.headers["x-request-id"]).toBe("edge-123.abc");
  });

  it.each([["x".repeat(1000)], ["has space"], ['quote"s'], ["semi;colon"]])(
    "replaces an unsafe incoming id (%#)",
    async (id) => {
      const res = await request(t.app).get("/nope").set("X-Request-Id", id);
      expect(res.headers["x-request-id"]).not.toBe(id);
      expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
    },
  );
});

describe("security headers", () => {
  onEngine("sqlite");

  it.each([["/health/live"], ["/api/notes"], ["/nope"]])(
    "sets helmet's headers and hides X-Powered-By on %s",
    async (url) => {
      const res = await request(t.app).get(url);
      expect(res.headers["x-powered-by"]).toBeUndefined();
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      expect(res.headers["content-security-policy"]).toContain("default-src 'self'");
      expect(res.headers["x-frame-options"]).toBe("SAMEORIGIN");
      expect(res.headers["strict-transport-security"]).toMatch(/max-age=/);
    },
  );
});
