// Tokens for the operations routes: their configuration, the bearer check, the 404 when none is
// set, the rate limit on failures, and logs that never carry a token (checked on a real process).
import { spawn } from "node:child_process";
import path from "node:path";
import express from "express";
import request from "supertest";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.ts";
import { createOperationsAuth, requireBearer, tokenFingerprint } from "../src/http/auth.ts";
import { errorHandler, notFound } from "../src/http/errors.ts";
import { createFailureLimiter } from "../src/http/rate-limit.ts";
import { redactUrl } from "../src/http/redact-url.ts";
import {
  captureLogger,
  childEnv,
  cleanupAfterEach,
  type LogLine,
  ROOT,
  runNode,
  startService,
} from "./helpers.ts";
import { ADMIN_TOKEN, bearer, METRICS_TOKEN, TOKENS } from "./ops-helpers.ts";

const { track, tempDir } = cleanupAfterEach();

describe("ADMIN_TOKEN and METRICS_TOKEN", () => {
  it("are read when 32 characters or longer, and null when unset", () => {
    expect(loadConfig({}, "/x")).toMatchObject({ adminToken: null, metricsToken: null });
    expect(loadConfig(TOKENS, "/x")).toMatchObject({ adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN });
    expect(loadConfig({ ADMIN_TOKEN: "a".repeat(32) }, "/x").adminToken).toBe("a".repeat(32));
  });

  it.each([
    ["ADMIN_TOKEN", "a".repeat(31), "(value hidden): expected at least 32 characters"],
    ["METRICS_TOKEN", "changeme", "(value hidden): expected at least 32 characters"],
    ["ADMIN_TOKEN", `${"b".repeat(32)} c`, "(value hidden): expected printable ASCII without spaces"],
  ])("refuses %s=%j with how to generate one, never repeating the value", (name, value, message) => {
    let error: unknown;
    try {
      loadConfig({ [name]: value }, "/x");
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const text = (error as Error).message;
    expect(text).toContain(`invalid ${name} ${message}`);
    expect(text).toContain("openssl rand -hex 32");
    expect(text).toContain("crypto.randomBytes(32).toString('hex')");
    expect(text).not.toContain(value);
  });

  it("refuses a METRICS_TOKEN equal to ADMIN_TOKEN", () => {
    expect(() => loadConfig({ ADMIN_TOKEN, METRICS_TOKEN: ADMIN_TOKEN }, "/x")).toThrow(
      /^invalid METRICS_TOKEN: it equals ADMIN_TOKEN/,
    );
  });

  it("stop the service at startup with one line when too short", async () => {
    const secret = "short-but-secret";
    const child = runNode("src/main.ts", [], {
      ADMIN_TOKEN: secret,
      DATABASE_PATH: path.join(tempDir(), "a.db"),
    });
    expect((await child.exited).code).toBe(1);
    const lines = child.stderr().trimEnd().split("\n");
    expect(lines).toEqual([
      expect.stringMatching(/^startup failed: invalid ADMIN_TOKEN \(value hidden\): .* openssl rand -hex 32/),
    ]);
    expect(child.stderr()).not.toContain(secret);
  });
});

describe("the bearer check", () => {
  /** An app with one guarded route, /ops, and the project's 404 and error handler. */
  function guarded(
    tokens: { adminToken: string | null; metricsToken: string | null },
    limiter = createFailureLimiter(),
  ) {
    const auth = createOperationsAuth(tokens, limiter);
    const app = express();
    app.get("/ops", auth.admin, (_req, res) => {
      res.json({ caller: res.locals.auth });
    });
    app.get("/scrape", auth.metrics, (_req, res) => {
      res.json({ caller: res.locals.auth });
    });
    return app.use(notFound, errorHandler);
  }

  it("answers 404 as an unknown route when no token is configured", async () => {
    const app = guarded({ adminToken: null, metricsToken: null });
    for (const url of ["/ops", "/scrape"]) {
      const res = await request(app).get(url).set(bearer(ADMIN_TOKEN)).expect(404);
      const unknown = await request(app).get(`${url}-nope`).expect(404);
      expect(res.body).toEqual({ error: { code: "not_found", message: `no route for GET ${url}` } });
      expect(unknown.body.error.code).toBe(res.body.error.code);
      expect(res.headers["www-authenticate"]).toBeUndefined();
      expect(res.headers["content-type"]).toBe(unknown.headers["content-type"]);
    }
  });

  it("lets the admin token through everywhere and the metrics token only to the scrape", async () => {
    const app = guarded({ adminToken: ADMIN_TOKEN, metricsToken: METRICS_TOKEN });
    const admin = { caller: "admin", tokenFingerprint: tokenFingerprint(ADMIN_TOKEN) };
    const metrics = { caller: "metrics", tokenFingerprint: tokenFingerprint(METRICS_TOKEN) };
    await request(app).get("/ops").set(bearer(ADMIN_TOKEN)).expect(200, { caller: admin });
    await request(app).get("/scrape").set(bearer(ADMIN_TOKEN)).expect(200, { caller: admin });
    await request(app).get("/scrape").set(bearer(METRICS_TOKEN)).expect(200, { caller: metrics });
    await request(app).get("/ops").set(bearer(METRICS_TOKEN)).expect(401);
    // The scheme is case-insensitive (RFC 9110).
    await request(app).get("/ops").set("Authorization", `bearer ${ADMIN_TOKEN}`).expect(200);
    expect(admin.tokenFingerprint).toMatch(/^[0-9a-f]{8}$/);
    expect(ADMIN_TOKEN).not.toContain(admin.tokenFingerprint);
  });

  it("answers 401 with WWW-Authenticate: Bearer and the one error shape to a missing or wrong token", async () => {
    const app = guarded({ adminToken: ADMIN_TOKEN, metricsToken: null });
    const attempts = [
      {},
      { Authorization: ADMIN_TOKEN },
      { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString("base64")}` },
      { Authorization: `Bearer ${ADMIN_TOKEN} extra` },
      bearer(ADMIN_TOKEN.slice(0, -1)),
      bearer(`${ADMIN_TOKEN.slice(0, -1)}${ADMIN_TOKEN.endsWith("0") ? "1" : "0"}`),
      bearer(`${ADMIN_TOKEN}0`),
      // Lengths that timingSafeEqual on the raw strings would throw on: the digests have one length.
      bearer("x"),
      bearer("y".repeat(4000)),
    ];
    for (const headers of attempts) {
      const res = await request(app).get("/ops").set(headers);
      expect(res.status, JSON.stringify(headers)).toBe(401);
      expect(res.headers["www-authenticate"]).toBe("Bearer");
      expect(res.body).toEqual({
        error: { code: "unauthorized", message: "a valid bearer token is required" },
      });
    }
  });

  it("rate-limits repeated failures from one client with 429 and Retry-After, logging it once, never a token", async () => {
    let clock = 1_000_000;
    const limiter = createFailureLimiter({ maxFailures: 3, windowMs: 60_000, now: () => clock });
    const { logger, lines } = captureLogger();
    const app = express();
    app.use((req, _res, next) => {
      req.log = logger;
      next();
    });
    const auth = createOperationsAuth({ adminToken: ADMIN_TOKEN, metricsToken: null }, limiter);
    app.get("/ops", auth.admin, (_req, res) => {
      res.json({ ok: true });
    });
    app.use(notFound, errorHandler);

    const wrong = bearer(`wrong-${ADMIN_TOKEN}`);
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await request(app).get("/ops").set(wrong)).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    clock += 15_000;
    const limited = await request(app).get("/ops").set(wrong).expect(429);
    expect(limited.headers["retry-after"]).toBe("45");
    expect(limited.body.error.code).toBe("too_many_requests");
    // The right token still passes: a lockout could be set off by anyone behind the same address.
    await request(app).get("/ops").set(bearer(ADMIN_TOKEN)).expect(200);
    clock += 45_000;
    await request(app).get("/ops").set(wrong).expect(401);

    expect(lines.map((l) => l.msg)).toEqual(["authentication failures rate-limited"]);
    expect(lines[0]).toMatchObject({ level: 40, failures: 4, client: expect.any(String) });
    expect(JSON.stringify(lines)).not.toContain(ADMIN_TOKEN);
  });
});

describe("the failure limiter", () => {
  it("counts per client in fixed windows", () => {
    let clock = 0;
    const limiter = createFailureLimiter({ maxFailures: 2, windowMs: 10_000, now: () => clock });
    expect([1, 2, 3].map(() => limiter.fail("a").limited)).toEqual([false, false, true]);
    expect(limiter.fail("b").limited).toBe(false);
    clock = 9_999;
    expect(limiter.fail("a")).toMatchObject({
      limited: true,
      crossed: false,
      failures: 4,
      retryAfterSeconds: 1,
    });
    clock = 10_000;
    expect(limiter.fail("a")).toMatchObject({ limited: false, failures: 1, retryAfterSeconds: 10 });
  });

  it("keeps at most maxClients, forgetting the client whose window is oldest", () => {
    let clock = 0;
    const limiter = createFailureLimiter({ maxFailures: 1, maxClients: 3, now: () => clock++ });
    limiter.fail("first");
    limiter.fail("first");
    for (let i = 0; i < 10_000; i++) limiter.fail(`client-${i}`);
    expect(limiter.size()).toBe(3);
    // "first" was forgotten: its next failure starts a new window.
    expect(limiter.fail("first").failures).toBe(1);
    // The newest clients are still tracked.
    expect(limiter.fail("client-9999").failures).toBe(2);
  });
});

describe("the request log", () => {
  it("replaces credentials in query strings and keeps the rest", () => {
    expect(redactUrl("/api/notes?limit=20&cursor=MQ")).toBe("/api/notes?limit=20&cursor=MQ");
    expect(redactUrl("/metrics?token=s3cret&x=1")).toBe("/metrics?token=[redacted]&x=1");
    expect(redactUrl("/m?access_token=a&API-KEY=b&Password=c&auth&%74oken=d")).toBe(
      "/m?access_token=[redacted]&API-KEY=[redacted]&Password=[redacted]&auth=[redacted]&%74oken=[redacted]",
    );
    expect(redactUrl("/health")).toBe("/health");
  });

  it("never holds a token or an Authorization header in a real run, and names each caller", async () => {
    const dir = tempDir();
    const service = track(
      await startService({ ...TOKENS, DATABASE_PATH: path.join(dir, "app.db"), LOG_LEVEL: "debug" }),
    );
    const wrong = `wrong-${"z".repeat(40)}`;
    const url = (p: string) => `http://127.0.0.1:${service.port}${p}`;
    const statuses = [
      (await fetch(url("/metrics"), { headers: bearer(METRICS_TOKEN) })).status,
      (await fetch(url("/metrics"), { headers: bearer(ADMIN_TOKEN) })).status,
      (await fetch(url("/health/details"), { headers: bearer(ADMIN_TOKEN) })).status,
      (await fetch(url("/health/details"), { headers: bearer(METRICS_TOKEN) })).status,
      (await fetch(url("/metrics"), { headers: bearer(wrong) })).status,
      (await fetch(url("/metrics"))).status,
      (await fetch(url(`/metrics?token=${wrong}&access_token=${METRICS_TOKEN}`))).status,
      (await fetch(url(`/api/notes?api_key=${ADMIN_TOKEN}`), { headers: bearer(ADMIN_TOKEN) })).status,
    ];
    expect(statuses).toEqual([200, 200, 200, 401, 401, 401, 401, 200]);
    service.process.kill("SIGTERM");
    expect((await service.exited).code).toBe(0);

    const log = service.logs.map((l) => JSON.stringify(l)).join("\n");
    const requests = service.logs.filter((l) => l.msg === "request completed");
    expect(requests).toHaveLength(statuses.length);
    for (const secret of [ADMIN_TOKEN, METRICS_TOKEN, wrong]) expect(log).not.toContain(secret);
    expect(log.toLowerCase()).not.toContain("authorization");
    expect(log.toLowerCase()).not.toContain("bearer");
    const auth = (l: LogLine) => l.auth as Record<string, unknown> | undefined;
    expect(requests.map((l) => auth(l)?.caller ?? auth(l)?.failure)).toEqual([
      "metrics",
      "admin",
      "admin",
      "invalid_token",
      "invalid_token",
      "missing_token",
      "missing_token",
      undefined,
    ]);
    expect(auth(requests[1]!)?.tokenFingerprint).toBe(tokenFingerprint(ADMIN_TOKEN));
    expect((requests[6]!.req as { url: string }).url).toBe(
      "/metrics?token=[redacted]&access_token=[redacted]",
    );
  });

  it("redacts an Authorization or Cookie header should a log line ever carry one", async () => {
    const script = `
      import { createLogger } from "./src/logger.ts";
      const logger = createLogger({ logLevel: "info" });
      logger.info({ req: { headers: { authorization: process.env.SECRET, cookie: process.env.SECRET } } }, "x");
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: ROOT,
      env: childEnv({ SECRET: `Bearer ${ADMIN_TOKEN}` }),
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    await new Promise((resolve) => child.once("exit", resolve));
    expect(JSON.parse(out).req.headers).toEqual({ authorization: "[redacted]", cookie: "[redacted]" });
  });
});

describe("requireBearer", () => {
  it("accepts each of its tokens and names the one that matched", async () => {
    const guard = requireBearer(
      [
        { name: "one", token: "1".repeat(32) },
        { name: "two", token: "2".repeat(32) },
      ],
      createFailureLimiter(),
    );
    const app = express()
      .get("/x", guard, (_req, res) => {
        res.json(res.locals.auth);
      })
      .use(notFound, errorHandler);
    expect(
      (
        await request(app)
          .get("/x")
          .set(bearer("2".repeat(32)))
          .expect(200)
      ).body.caller,
    ).toBe("two");
    expect(
      (
        await request(app)
          .get("/x")
          .set(bearer("1".repeat(32)))
          .expect(200)
      ).body.caller,
    ).toBe("one");
    await request(app)
      .get("/x")
      .set(bearer("3".repeat(32)))
      .expect(401);
  });
});
