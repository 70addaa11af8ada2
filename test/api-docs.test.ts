// GET /openapi.json and GET /docs: the document is generated from the routes' declarations and
// lints clean with @redocly/cli; the docs page is served from this service with its own CSP; and
// API_DOCS turns both off.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, loadConfig } from "../src/config.ts";
import { apiRouter } from "../src/http/api-router.ts";
import { errorBody } from "../src/http/errors.ts";
import { createOpenApiDocument, toOpenApiPath } from "../src/http/openapi.ts";
import { childEnv, cleanupAfterEach, createTestApp, ROOT } from "./helpers.ts";

const { defer, tempDir } = cleanupAfterEach();

async function servedDocument(env: Record<string, string> = {}) {
  const t = await createTestApp(env);
  defer(() => t.close());
  const res = await request(t.app)
    .get("/openapi.json")
    .expect(200)
    .expect("Content-Type", /application\/json/);
  return { t, document: res.body, text: res.text };
}

/** Every response object in the document, with where it is, its $ref followed. */
function responsesOf(document: any) {
  const deref = (value: any) =>
    value.$ref ? document.components.responses[value.$ref.replace("#/components/responses/", "")] : value;
  return Object.entries(document.paths as Record<string, Record<string, any>>).flatMap(([path, item]) =>
    Object.entries(item).flatMap(([method, operation]) =>
      Object.entries(operation.responses as Record<string, any>).map(([status, response]) => ({
        where: `${method} ${path} ${status}`,
        status,
        operation,
        response: deref(response),
      })),
    ),
  );
}

const redocly = path.join(ROOT, "node_modules", "@redocly", "cli", "bin", "cli.js");

async function lint(document: unknown) {
  const file = path.join(tempDir(), "openapi.json");
  fs.writeFileSync(file, JSON.stringify(document));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [redocly, "lint", "--config", "redocly.yaml", "--format=json", file],
    { cwd: ROOT, env: childEnv({ REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" }) },
  ).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? "" }));
  return JSON.parse(stdout) as {
    totals: { errors: number; warnings: number };
    problems: { ruleId: string }[];
  };
}

describe("GET /openapi.json", () => {
  it("describes every route the app mounts, from the routes' own schemas", async () => {
    const { document } = await servedDocument();
    expect(document.openapi).toBe("3.1.0");
    const operations = responsesOf(document).map(({ operation }) => operation.operationId);
    expect([...new Set(operations)].sort()).toEqual([
      "createNote",
      "deleteNote",
      "getHealth",
      "getHealthDetails",
      "getLiveness",
      "getNote",
      "listNotes",
      "updateNote",
    ]);
    // The limits the routes enforce, as the document states them.
    expect(document.components.schemas.NewNote).toMatchObject({
      required: ["title"],
      additionalProperties: false,
      properties: { title: { minLength: 1, maxLength: 200 }, body: { maxLength: 10_000, default: "" } },
    });
    expect(document.paths["/api/notes/{id}"].get.parameters).toEqual([
      expect.objectContaining({ in: "path", name: "id", required: true }),
    ]);
  });

  it("has one error shape, the Error component, behind every error response", async () => {
    const { document } = await servedDocument();
    const errors = responsesOf(document).filter(
      ({ status }) => status === "default" || Number(status) >= 400,
    );
    // 503 of /health is its own body, not an error: the probe reports why it cannot serve.
    const shared = errors.filter(
      ({ where }) => !["get /health 503", "get /health/details 503"].includes(where),
    );
    expect(shared.length).toBeGreaterThan(15);
    for (const { where, response } of shared) {
      expect(Object.keys(response.content), where).toEqual(["application/json"]);
      const { schema, example } = response.content["application/json"];
      expect(schema, where).toEqual({ $ref: "#/components/schemas/Error" });
      // /docs shows this example: it must be a real error body, with a code its description names.
      expect(errorBody.safeParse(example).success, where).toBe(true);
      expect(response.description, where).toContain(example.error.code);
    }
    expect(document.components.schemas.Error.properties.error.required).toEqual([
      "code",
      "message",
      "requestId",
    ]);
  });

  it("marks public operations `security: []` and offers the bearer scheme", async () => {
    const { document } = await servedDocument();
    expect(document.components.securitySchemes.bearerAuth).toMatchObject({ type: "http", scheme: "bearer" });
    expect(document.paths["/api/notes"].post.security).toEqual([]);
    expect(document.paths["/health/live"].get.security).toEqual([]);
    expect(document.paths["/health"].get.security).toEqual([]);
    expect(document.paths["/health/details"].get.security).toEqual([{ bearerAuth: [] }]);
  });

  it("answers the same document to every request", async () => {
    const { t, text } = await servedDocument();
    expect((await request(t.app).get("/openapi.json")).text).toBe(text);
  });

  it("passes @redocly/cli lint with no error or warning, which does fail a broken document", async () => {
    const { document } = await servedDocument();
    const broken = structuredClone(document);
    delete broken.paths["/api/notes"].post.security;
    broken.paths["/api/notes"].get.operationId = "createNote";
    const [clean, bad] = await Promise.all([lint(document), lint(broken)]);
    expect(clean).toMatchObject({ totals: { errors: 0, warnings: 0 }, problems: [] });
    expect(bad.problems.map((p) => p.ruleId).sort()).toEqual([
      "operation-operationId-unique",
      "security-defined",
    ]);
  });
});

describe("declaring a route", () => {
  it("documents one that needs a token with the bearer scheme and its 401", () => {
    const admin = apiRouter({ name: "admin", description: "Operations" });
    admin.post(
      "/backups",
      {
        operationId: "takeBackup",
        summary: "Take a backup",
        auth: "bearer",
        responses: { 201: { description: "Taken", body: z.object({ file: z.string() }) } },
      },
      (_req, res) => {
        res.status(201).json({ file: "x" });
      },
    );
    const document = createOpenApiDocument({ "/admin": admin });
    expect(document.paths?.["/admin/backups"]?.post).toMatchObject({
      security: [{ bearerAuth: [] }],
      responses: { 401: { $ref: "#/components/responses/Unauthorized" } },
    });
  });

  it("turns Express paths into OpenAPI paths, and refuses what OpenAPI cannot say", () => {
    expect(toOpenApiPath("/api/notes", "/")).toBe("/api/notes");
    expect(toOpenApiPath("/api/notes", "/:id")).toBe("/api/notes/{id}");
    expect(toOpenApiPath("/api/notes", "/:id/tags/:tag")).toBe("/api/notes/{id}/tags/{tag}");
    expect(() => toOpenApiPath("/files", "/*path")).toThrow("cannot document the path /files/*path");
    expect(() => toOpenApiPath("/notes", "/:id{.:format}")).toThrow("cannot document");
  });
});

describe("GET /docs", () => {
  it("serves the page and its assets from this service, with the CSP loosened for /docs only", async () => {
    const t = await createTestApp();
    defer(() => t.close());
    const page = await request(t.app)
      .get("/docs")
      .expect(200)
      .expect("Content-Type", /text\/html/);
    const scripts = [...page.text.matchAll(/<(?:script src|link rel="stylesheet" href)="([^"]+)"/g)].map(
      (m) => m[1],
    );
    expect(scripts).toEqual(["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/init.js"]);
    for (const asset of scripts) await request(t.app).get(asset!).expect(200);
    expect(page.text).not.toMatch(/https?:\/\//);

    const csp = (res: request.Response) => String(res.headers["content-security-policy"]);
    expect(csp(page)).toContain("script-src 'self'");
    expect(csp(page)).not.toContain("upgrade-insecure-requests");
    for (const url of ["/api/notes", "/health", "/openapi.json", "/nowhere"]) {
      expect(csp(await request(t.app).get(url)), url).toContain("upgrade-insecure-requests");
    }
  });

  it("serves none of the package's other files", async () => {
    const t = await createTestApp();
    defer(() => t.close());
    for (const url of [
      "/docs/swagger-initializer.js",
      "/docs/index.html",
      "/docs/package.json",
      "/docs/..%2f..%2fpackage.json",
      "/docs/%2e%2e%2fswagger-ui-dist%2fpackage.json",
    ]) {
      const res = await request(t.app).get(url);
      expect(res.status, url).toBe(404);
      expect(res.body.error.code, url).toBe("not_found");
    }
  });
});

describe("API_DOCS", () => {
  it("is on by default, except with NODE_ENV=production", () => {
    expect(loadConfig({}, "/x").apiDocs).toBe(true);
    expect(loadConfig({ NODE_ENV: "test" }, "/x").apiDocs).toBe(true);
    expect(loadConfig({ NODE_ENV: "production" }, "/x").apiDocs).toBe(false);
    expect(loadConfig({ NODE_ENV: "production", API_DOCS: "on" }, "/x").apiDocs).toBe(true);
    expect(loadConfig({ API_DOCS: "off" }, "/x").apiDocs).toBe(false);
    expect(() => loadConfig({ API_DOCS: "yes please" }, "/x")).toThrow(
      new ConfigError('invalid API_DOCS="yes please": expected on or off'),
    );
  });

  it("off: /openapi.json and /docs answer 404 as unknown routes do", async () => {
    const t = await createTestApp({ API_DOCS: "off" });
    defer(() => t.close());
    for (const url of ["/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"]) {
      const res = await request(t.app).get(url).expect(404);
      expect(res.body.error).toMatchObject({ code: "not_found", message: `no route for GET ${url}` });
    }
  });
});
