// Hostile input, property-based: generated requests (methods, paths, query strings, headers and
// bodies) sent as raw bytes to every route. Whatever arrives: never a 5xx, an error in the one
// shape, helmet's headers, no stack, SQL or path, and a rejected request changes nothing stored.
// Seeded, so a failure reproduces; SOAK=1 (npm run test:soak) tries ten times as many.

import type { AddressInfo } from "node:net";
import net from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createEngineTestApp, describeEngines, type EngineTestApp } from "./engines.ts";
import { ROOT } from "./helpers.ts";

const RUNS = process.env.SOAK ? 25_000 : 2_500;
const SEED = 20261125;
const BODY_LIMIT = 8 * 1024;

let t: EngineTestApp;
let server: ReturnType<EngineTestApp["app"]["listen"]>;
let port: number;

// --- generators -------------------------------------------------------------------------------

const NASTY = [
  "'; DROP TABLE notes; --",
  '" OR 1=1 --',
  "1; DELETE FROM notes",
  "<script>alert(1)</script>",
  "\r\n",
  "\r\nX-Injected: yes",
  "\u0000",
  "\ud800",
  "\udfff\ud800",
  "__proto__",
  "constructor",
  "prototype",
  "../../etc/passwd",
  "%00",
  "%c3%28",
  "%",
  "1e400",
  "-1",
  "0",
  "9007199254740993",
  "99999999999999999999",
  "NaN",
  "Infinity",
  "\u202e",
  "😀",
  " ",
];

const nastyString = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...NASTY), { maxLength: 4 }).map((p) => p.join("x")) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 300 }).map((n) => "t".repeat(n)) },
);

const jsonish: fc.Arbitrary<unknown> = fc.oneof(
  nastyString,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(1e308),
  fc.array(fc.constantFrom(1, "a", null), { maxLength: 3 }),
  fc.dictionary(nastyString, fc.constantFrom(1, "a", null), { maxKeys: 3 }),
);

// An object a client might send to /api/notes, give or take: right keys with wrong values, extra keys,
// keys that are traps for naive merging (__proto__, constructor).
const noteLike = fc
  .record(
    {
      title: jsonish,
      body: jsonish,
      extra: fc.tuple(fc.constantFrom("__proto__", "constructor", "id", "createdAt", "x"), jsonish),
    },
    { requiredKeys: [] },
  )
  .map(({ extra, ...rest }) => {
    const value: Record<string, unknown> = { ...rest };
    // defineProperty, so "__proto__" becomes an own key that JSON.stringify writes out.
    if (extra) Object.defineProperty(value, extra[0], { value: extra[1], enumerable: true });
    return value;
  });

const wellFormedNote = fc.record(
  {
    title: fc.string({ minLength: 1, maxLength: 200 }),
    body: fc.oneof(fc.string({ maxLength: 300 }), fc.constantFrom(...NASTY)),
  },
  { requiredKeys: ["title"] },
);

const depth = fc.integer({ min: 1, max: 20_000 });
const rawBody: fc.Arbitrary<Buffer> = fc
  .oneof(
    fc.oneof(noteLike, wellFormedNote, jsonish).map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
    depth.map((n) => Buffer.from(`${"[".repeat(n)}${"]".repeat(n)}`)),
    depth.map((n) => Buffer.from(`${'{"title":'.repeat(n)}"x"${"}".repeat(n)}`)),
    fc.integer({ min: 300, max: 2000 }).map((n) => Buffer.from(`{"title": "n", "body": 1${"0".repeat(n)}}`)),
    // Invalid UTF-8 inside an otherwise valid JSON string.
    fc
      .uint8Array({ minLength: 1, maxLength: 16 })
      .map((bytes) =>
        Buffer.concat([
          Buffer.from('{"title": "'),
          Buffer.from([0xff, 0xc3, 0x28, ...bytes]),
          Buffer.from('"}'),
        ]),
      ),
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.constantFrom("", "{", '{"title": ', "null", "[]", '"just a string"', "\ufeff{}", "title=x&body=y"),
    // Over BODY_LIMIT.
    fc
      .integer({ min: BODY_LIMIT + 1, max: BODY_LIMIT * 4 })
      .map((n) => Buffer.from(JSON.stringify({ title: "big", body: "b".repeat(n) }))),
  )
  .map((b) => (typeof b === "string" ? Buffer.from(b) : b));

/** Drops CR, LF, NUL and the other C0 controls: for where the raw request must still parse. */
function withoutControls(value: string): string {
  return Array.from(value)
    .filter((c) => c >= " ")
    .join("");
}

// Bytes as they would appear in a URL: sometimes percent-encoded properly, sometimes raw.
const urlPart = fc.oneof(
  nastyString.map((s) => percentEncode(s)),
  fc.constantFrom(
    "%",
    "%zz",
    "%c3%28",
    "%00",
    "%2e%2e",
    "..",
    "",
    "a%2Fb",
    "%E2%80%AE",
    "1",
    "2",
    "5",
    "999",
  ),
  nastyString.map((s) => withoutControls(s).replaceAll(" ", "")),
);

const route = fc.oneof(
  fc.constantFrom(
    "/api/notes",
    "/api/notes/",
    "/health",
    "/health/",
    "/health/live",
    "/",
    "/api",
    "//api//notes",
  ),
  fc.integer({ min: 1, max: 8 }).map((id) => `/api/notes/${id}`),
  urlPart.map((p) => `/api/notes/${p}`),
  urlPart.map((p) => `/${p}`),
  fc.tuple(urlPart, urlPart).map(([a, b]) => `/api/notes/${a}/${b}`),
);

const query = fc
  .array(
    fc.tuple(
      fc.oneof(
        fc.constantFrom(
          "limit",
          "cursor",
          "__proto__",
          "constructor",
          "limit[]",
          "__proto__[x]",
          "constructor[prototype][y]",
        ),
        urlPart,
      ),
      fc.oneof(
        fc.constantFrom("1", "100", "101", "0", "-1", "1e3", "abc", "MQ", "OTk5OTk5OTk5OTk5OTk5OTk5"),
        urlPart,
      ),
    ),
    { maxLength: 5 },
  )
  .map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join("&"));

const contentType = fc.oneof(
  fc.constantFrom(
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin1",
    "application/json; charset=utf-16",
    "application/merge-patch+json",
    "APPLICATION/JSON",
    "application/json;;;",
    "text/plain",
    "text/html",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
  ),
  nastyString.map(withoutControls),
);

const requestId = fc.oneof(
  fc.constantFrom("x".repeat(1000), "abc\r\nX-Injected: yes", "ok-123", "a b", 'q"uote', "<script>"),
  fc.string({ maxLength: 200 }).map(withoutControls),
);

const anyRequest = fc.record(
  {
    method: fc.constantFrom("GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"),
    route,
    query,
    body: fc.option(rawBody, { freq: 3 }),
    contentType: fc.option(contentType, { freq: 4 }),
    contentEncoding: fc.option(fc.constantFrom("gzip", "deflate", "br", "identity", "x-unknown"), {
      freq: 8,
    }),
    requestId: fc.option(requestId, { freq: 2 }),
    chunked: fc.boolean(),
    extraHeader: fc.option(
      fc.tuple(fc.constantFrom("X-Forwarded-For", "Accept", "Cookie", "X-Custom"), nastyString),
    ),
  },
  {
    requiredKeys: [
      "method",
      "route",
      "query",
      "body",
      "contentType",
      "contentEncoding",
      "requestId",
      "chunked",
    ],
  },
);

// Nearly valid requests, so that the generators also reach past validation into the database.
const plausibleRequest = fc.record({
  method: fc.constantFrom("POST", "PATCH"),
  route: fc.constantFrom("/api/notes", "/api/notes/1", "/api/notes/2", "/api/notes/3"),
  query: fc.constant(""),
  body: fc.oneof(wellFormedNote, noteLike).map((v) => Buffer.from(JSON.stringify(v))),
  contentType: fc.constantFrom("application/json", "application/json; charset=utf-8"),
  contentEncoding: fc.constant(null),
  requestId: fc.option(requestId, { freq: 2 }),
  chunked: fc.boolean(),
});

const hostileRequest = fc.oneof(
  { weight: 4, arbitrary: anyRequest },
  { weight: 1, arbitrary: plausibleRequest },
) as fc.Arbitrary<AnyRequest>;

type AnyRequest = typeof anyRequest extends fc.Arbitrary<infer T> ? T : never;
type HostileRequest = typeof hostileRequest extends fc.Arbitrary<infer T> ? T : never;

// --- raw HTTP -----------------------------------------------------------------------------------

function percentEncode(value: string): string {
  // encodeURIComponent throws on a lone surrogate; bytes of its UTF-8 form do not.
  return [...Buffer.from(value, "utf8")]
    .map((b) =>
      /[A-Za-z0-9_.~-]/.test(String.fromCharCode(b))
        ? String.fromCharCode(b)
        : `%${b.toString(16).padStart(2, "0")}`,
    )
    .join("");
}

function encodeRequest(r: HostileRequest): Buffer {
  const target = r.query ? `${r.route}?${r.query}` : r.route;
  const lines = [`${r.method} ${target} HTTP/1.1`, "Host: localhost"];
  if (r.contentType !== null) lines.push(`Content-Type: ${r.contentType}`);
  if (r.contentEncoding !== null) lines.push(`Content-Encoding: ${r.contentEncoding}`);
  if (r.requestId !== null) lines.push(`X-Request-Id: ${r.requestId}`);
  if (r.extraHeader) lines.push(`${r.extraHeader[0]}: ${withoutControls(r.extraHeader[1])}`);
  let body: Buffer = Buffer.alloc(0);
  if (r.body !== null) {
    if (r.chunked) {
      lines.push("Transfer-Encoding: chunked");
      body = Buffer.concat([
        ...(r.body.length
          ? [Buffer.from(`${r.body.length.toString(16)}\r\n`), r.body, Buffer.from("\r\n")]
          : []),
        Buffer.from("0\r\n\r\n"),
      ]);
    } else {
      lines.push(`Content-Length: ${r.body.length}`);
      body = r.body;
    }
  }
  // latin1 keeps whatever bytes a generated header or path holds (a lone surrogate becomes "?").
  return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), body]);
}

interface RawResponse {
  status: number;
  headers: Record<string, string[]>;
  body: string;
}

/**
 * One request on its own connection. Not half-closed after writing: Node's server takes the
 * client's FIN as the end of the connection and may drop an answer it is still computing. We read
 * one complete response, then hang up.
 */
function send(bytes: Buffer, method = "GET"): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let raw: Buffer = Buffer.alloc(0);
    let settled = false;
    const settle = (closed: boolean) => {
      if (settled) return;
      const parsed = parseResponse(raw, method, closed);
      if (parsed) {
        settled = true;
        socket.destroy();
        resolve(parsed);
      } else if (closed) {
        settled = true;
        reject(new Error(`no HTTP response, got ${JSON.stringify(raw.toString("latin1").slice(0, 200))}`));
      }
    };
    socket.on("data", (chunk) => {
      raw = Buffer.concat([raw, chunk]);
      settle(false);
    });
    socket.on("end", () => settle(true));
    socket.on("error", () => settle(true));
    socket.write(bytes);
  });
}

/** A complete response in `raw`, or undefined while more is to come. */
function parseResponse(raw: Buffer, method: string, closed: boolean): RawResponse | undefined {
  const split = raw.indexOf("\r\n\r\n");
  if (split < 0) return undefined;
  const [statusLine, ...headerLines] = raw.subarray(0, split).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? "")?.[1]);
  if (!status) return undefined;
  const headers: Record<string, string[]> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim().toLowerCase();
    headers[name] ??= [];
    headers[name].push(line.slice(colon + 1).trim());
  }
  let body = raw.subarray(split + 4);
  const length = headers["content-length"]?.[0];
  if (method === "HEAD" || status === 204 || status === 304) body = Buffer.alloc(0);
  else if (length !== undefined) {
    if (body.length < Number(length)) return undefined;
    body = body.subarray(0, Number(length));
  } else if (headers["transfer-encoding"]?.[0] === "chunked") {
    if (body.indexOf("0\r\n\r\n") < 0) return undefined;
    body = dechunk(body);
  } else if (!closed) return undefined;
  return { status, headers, body: body.toString("utf8") };
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf("\r\n", at);
    const size = Number.parseInt(data.subarray(at, eol).toString("latin1"), 16);
    if (!size) return Buffer.concat(parts);
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

// --- the properties -------------------------------------------------------------------------------

const SANE_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

// Every stored row, as the engine returns it: any change to any note shows.
async function storedState() {
  return JSON.stringify(await t.storage.kysely.selectFrom("notes").selectAll().orderBy("id").execute());
}

const tally = { requests: 0, byStatus: new Map<number, number>() };

async function check(r: HostileRequest) {
  const before = await storedState();
  const res = await send(encodeRequest(r), r.method);
  tally.requests++;
  tally.byStatus.set(res.status, (tally.byStatus.get(res.status) ?? 0) + 1);

  expect(res.status, "never a 5xx").toBeLessThan(500);
  expect(res.headers["x-powered-by"]).toBeUndefined();
  expect(res.headers["x-injected"], "CRLF in a header never becomes a response header").toBeUndefined();

  // Node's HTTP parser answers a request it cannot parse (a raw space or control byte in the target)
  // with a bare 400 before Express sees it: no body, nothing to sniff.
  const reachedApp = res.headers["x-request-id"] !== undefined;
  if (!reachedApp) {
    expect(res.status).toBe(400);
    expect(res.body).toBe("");
  } else {
    const [id] = res.headers["x-request-id"]!;
    expect(id).toMatch(SANE_ID);
    if (r.requestId !== null && !SANE_ID.test(r.requestId)) expect(id).not.toBe(r.requestId);
    expect(res.headers["x-content-type-options"]).toEqual(["nosniff"]);
    expect(res.headers["content-security-policy"]?.[0]).toContain("default-src 'self'");
  }

  if (res.status >= 400 && reachedApp && r.method !== "HEAD") {
    expect(res.headers["content-type"]?.[0]).toMatch(/^application\/json/);
    const body = JSON.parse(res.body);
    expect(Object.keys(body)).toEqual(["error"]);
    expect(body.error).toEqual({
      code: expect.stringMatching(/^[a-z_0-9]+$/),
      message: expect.any(String),
      requestId: res.headers["x-request-id"]![0],
      ...(body.error.details === undefined ? {} : { details: expect.any(Array) }),
    });
    expect(res.body).not.toContain(ROOT);
    expect(res.body).not.toMatch(/node_modules|SQLITE_|\n\s+at /);
  }

  const changed = (await storedState()) !== before;
  if (res.status >= 300 || ["GET", "HEAD", "OPTIONS"].includes(r.method)) {
    expect(changed, `a ${res.status} to ${r.method} changed what is stored`).toBe(false);
  }

  // An accepted note is stored and returned exactly as sent.
  if (res.status === 201) {
    const sent = JSON.parse(r.body!.toString("utf8"));
    const note = JSON.parse(res.body);
    expect(note.title).toBe(sent.title);
    expect(note.body).toBe(sent.body ?? "");
    const row = await t.storage.kysely
      .selectFrom("notes")
      .select(["title", "body"])
      .where("id", "=", note.id)
      .executeTakeFirst();
    expect(row).toEqual({ title: note.title, body: note.body });
  }
}

describeEngines("hostile input", (engine) => {
  beforeAll(async () => {
    t = await createEngineTestApp(engine, { BODY_LIMIT: `${BODY_LIMIT}b` });
    await t.storage.kysely
      .insertInto("notes")
      .values(
        // Timestamps the API itself would write: its responses are held to /openapi.json (test/contract.ts).
        [1, 2, 3, 4, 5].map((i) => ({
          title: `seed ${i}`,
          body: `body ${i}`,
          created_at: "2000-01-01T00:00:00.000Z",
          updated_at: "2000-01-01T00:00:00.000Z",
        })),
      )
      .execute();
    server = t.app.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    port = (server.address() as AddressInfo).port;
    tally.requests = 0;
    tally.byStatus.clear();
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await t.close();
  });

  it(`answers ${RUNS} generated requests without a 5xx, in the error shape, changing nothing when it refuses`, async () => {
    await fc.assert(fc.asyncProperty(hostileRequest, check), {
      numRuns: RUNS,
      seed: SEED,
      endOnFailure: true,
      // The default report prints the whole counterexample, bodies of tens of kilobytes included.
      reporter: (details) => {
        if (!details.failed) return;
        throw new Error(
          `property failed (seed ${details.seed}, path ${details.counterexamplePath}): ${String(details.errorInstance)}\n` +
            `counterexample: ${fc.stringify(details.counterexample).slice(0, 3000)}`,
        );
      },
    });
    const statuses = Object.fromEntries([...tally.byStatus].sort(([a], [b]) => a - b));
    console.info(
      `hostile input (${engine}): ${tally.requests} generated requests, by status ${JSON.stringify(statuses)}`,
    );
    // The generators reach past validation too: some requests succeed, and most kinds of refusal occur.
    for (const status of [200, 201, 400, 404, 413, 415])
      expect(tally.byStatus.get(status), `status ${status}`).toBeGreaterThan(0);
  }, 300_000);

  it.each([
    ["a lone surrogate in the title", '{"title": "a\\ud800b"}'],
    ["a 4,000-deep array", `${"[".repeat(4_000)}${"]".repeat(4_000)}`],
    ["a number with 1,000 digits", `{"title": "x", "body": 1${"0".repeat(1000)}}`],
    ["__proto__ as a key", '{"title": "x", "__proto__": {"admin": true}}'],
    ["constructor as a key", '{"title": "x", "constructor": {"prototype": {"admin": true}}}'],
  ])("refuses %s with 400 and stores nothing", async (_, text) => {
    const before = await storedState();
    const res = await send(
      Buffer.from(
        `POST /api/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
      ),
    );
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body).error.code).toMatch(/^(bad_json|validation_failed)$/);
    expect(await storedState()).toBe(before);
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });
});
