// The contract checks themselves: every documented response of every operation is produced here
// and matches /openapi.json, and a response that strays from its declaration is caught.
import fs from "node:fs";
import path from "node:path";
import express from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { apiDocsRouter } from "../src/http/api-docs.ts";
import { apiRouter } from "../src/http/api-router.ts";
import { errorHandler, notFound } from "../src/http/errors.ts";
import { checkRecordedResponses, recordResponses } from "./contract.ts";
import { cleanupAfterEach, createTestApp } from "./helpers.ts";
import { ADMIN_TOKEN, bearer } from "./ops-helpers.ts";

const { defer } = cleanupAfterEach();

describe("contract", () => {
  it("covers every documented status of every operation, each response matching the document", async () => {
    const t = await createTestApp({ BODY_LIMIT: "1kb", ADMIN_TOKEN });
    defer(() => t.close());
    const app = request(t.app);
    const big = { title: "big", body: "x".repeat(2000) };
    const text = (req: request.Test) => req.set("Content-Type", "text/plain").send("hello");

    await app.get("/health/live").expect(200);
    await app.get("/health").expect(200);
    await app.get("/health/details").set(bearer(ADMIN_TOKEN)).expect(200);
    await app.get("/health/details").expect(401);

    await app.post("/api/notes").send({ title: "first" }).expect(201);
    await app.post("/api/notes").send({}).expect(400);
    await app.post("/api/notes").send(big).expect(413);
    await text(app.post("/api/notes")).expect(415);

    await app.post("/api/notes").send({ title: "second" }).expect(201);
    await app.get("/api/notes?limit=1").expect(200);
    await app.get("/api/notes?limit=0").expect(400);

    await app.get("/api/notes/1").expect(200);
    await app.get("/api/notes/abc").expect(400);
    await app.get("/api/notes/99").expect(404);

    await app.patch("/api/notes/1").send({ body: "changed" }).expect(200);
    await app.patch("/api/notes/1").send({}).expect(400);
    await app.patch("/api/notes/99").send({ title: "x" }).expect(404);
    await app.patch("/api/notes/1").send(big).expect(413);
    await text(app.patch("/api/notes/1")).expect(415);

    await app.delete("/api/notes/2").expect(204);
    await app.delete("/api/notes/0").expect(400);
    await app.delete("/api/notes/2").expect(404);

    // The operations API (ADMIN_TOKEN): backups listed, taken, downloaded, verified and restored.
    const admin = (req: request.Test) => req.set(bearer(ADMIN_TOKEN));
    for (const [method, url] of [
      ["get", "/admin/backups"],
      ["post", "/admin/backups"],
      ["get", "/admin/backups/x.db"],
      ["post", "/admin/backups/x.db/verify"],
      ["post", "/admin/restore"],
    ] as const) {
      await app[method](url).expect(401);
    }
    await admin(app.get("/admin/backups")).expect(200);
    const taken = (await admin(app.post("/admin/backups")).expect(201)).body;
    await admin(app.get(`/admin/backups/${taken.file}`)).expect(200);
    await admin(app.get("/admin/backups/app-20200101T000000000Z-manual.db")).expect(404);
    await admin(app.post(`/admin/backups/${taken.file}/verify`)).expect(200);
    await admin(app.post("/admin/backups/nothing.db/verify")).expect(404);
    const tooLong = "x".repeat(300);
    await admin(app.get(`/admin/backups/${tooLong}`)).expect(400);
    await admin(app.post(`/admin/backups/${tooLong}/verify`)).expect(400);
    await admin(app.post("/admin/restore").send({ backup: "x".repeat(2000) })).expect(413);
    await admin(app.post("/admin/restore").send({ backup: "latest" })).expect(200);
    await admin(app.post("/admin/restore").send({ backup: "app-20200101T000000000Z-manual.db" })).expect(404);
    await admin(app.post("/admin/restore").send({})).expect(400);
    await text(admin(app.post("/admin/restore"))).expect(415);
    fs.writeFileSync(
      path.join(t.config.backupDir, "app-20991231T000000000Z-manual.db"),
      "not a database".repeat(300),
    );
    await admin(app.post("/admin/restore").send({ backup: "latest" })).expect(422);
    fs.rmSync(path.join(t.config.backupDir, "app-20991231T000000000Z-manual.db"));
    const release = t.holdRestore();
    const running = t.restorer.restore(taken.file);
    await admin(app.post("/admin/backups")).expect(409);
    await admin(app.post("/admin/restore").send({ backup: taken.file })).expect(409);
    release();
    await running;

    // Not in WAL mode: the service cannot serve.
    t.storage.sqlite.pragma("journal_mode = DELETE");
    await app.get("/health").expect(503);
    await app.get("/health/details").set(bearer(ADMIN_TOKEN)).expect(503);

    const { failures, checked } = await checkRecordedResponses();
    expect(failures).toEqual([]);

    const document = (await app.get("/openapi.json").expect(200)).body;
    const documented = Object.values(document.paths as Record<string, Record<string, any>>).flatMap((item) =>
      Object.values(item).flatMap((operation) =>
        Object.keys(operation.responses)
          .filter((status) => status !== "default")
          .map((status) => `${operation.operationId} ${status}`),
      ),
    );
    const seen = new Set(checked.map(({ operationId, documented }) => `${operationId} ${documented}`));
    expect(documented.filter((response) => !seen.has(response))).toEqual([]);
    expect(documented.length).toBeGreaterThanOrEqual(20);
  });

  it("catches a body that strays from its schema, an undocumented status and a wrong media type", async () => {
    const things = apiRouter({ name: "things", description: "A route whose output drifted" });
    const thing = z.strictObject({ name: z.string() });
    const op = { summary: "A thing", responses: { 200: { description: "The thing", body: thing } } };
    things.get("/renamed", { ...op, operationId: "renamed" }, (_req, res) => {
      res.json({ title: "the field was renamed" });
    });
    things.get("/extra", { ...op, operationId: "extra" }, (_req, res) => {
      res.json({ name: "x", internal: "leaked" });
    });
    things.get("/status", { ...op, operationId: "status" }, (_req, res) => {
      res.status(202).json({ name: "x" });
    });
    things.get("/text", { ...op, operationId: "text" }, (_req, res) => {
      res.type("text").send("name: x");
    });
    things.get("/fine", { ...op, operationId: "fine" }, (_req, res) => {
      res.json({ name: "x" });
    });
    const api = { "/things": things };
    const app = express();
    app.use("/things", things.router);
    app.use(apiDocsRouter(api), notFound, errorHandler);
    const recording = recordResponses(app);

    for (const path of ["renamed", "extra", "status", "text", "fine"])
      await request(recording).get(`/things/${path}`);
    const { failures, checked } = await checkRecordedResponses();

    expect(failures).toEqual([
      expect.stringMatching(/^GET \/things\/renamed → 200: body must have required property 'name'/),
      expect.stringMatching(/^GET \/things\/extra → 200: body must NOT have additional properties/),
      // 202 is not documented: it falls under `default`, the error shape, which it is not.
      expect.stringMatching(/^GET \/things\/status → 202: body must have required property 'error'/),
      expect.stringMatching(/^GET \/things\/text → 200: Content-Type text\/plain is not documented/),
    ]);
    expect(checked).toEqual([{ operationId: "fine", documented: "200" }]);
  });
});
