// Bearer-token guards for the operations routes: ADMIN_TOKEN opens all of them, METRICS_TOKEN only
// GET /metrics. A route whose token is not configured does not exist (404, as an unknown route).
import { createHash, timingSafeEqual } from "node:crypto";
import type { Request, RequestHandler } from "express";
import { HttpError, notFound } from "./errors.ts";
import { createFailureLimiter, type FailureLimiter } from "./rate-limit.ts";

export interface BearerToken {
  /** Who holds it, as the logs name the caller: "admin", "metrics". */
  name: string;
  token: string;
}

/** What a guarded request's log line says about its caller (res.locals.auth); never the token. */
export type AuthLogFields =
  | { caller: string; tokenFingerprint: string }
  | { failure: "missing_token" | "invalid_token" | "rate_limited"; client: string | undefined };

/** First 8 hex digits of the token's SHA-256: tells tokens apart in logs, reveals nothing usable. */
export function tokenFingerprint(token: string): string {
  return sha256(token).toString("hex").slice(0, 8);
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

// RFC 6750's `Authorization: Bearer <token>`; the scheme name is case-insensitive (RFC 9110).
const BEARER = /^Bearer +(\S+) *$/i;

/**
 * Middleware that lets a request through when it carries one of `tokens`. Both sides are hashed
 * first: SHA-256 digests always have the same length, which timingSafeEqual requires, so neither
 * the comparison's time nor an exception says how much of a guess was right.
 */
export function requireBearer(tokens: BearerToken[], limiter: FailureLimiter): RequestHandler {
  if (tokens.length === 0) return notFound;
  const accepted = tokens.map(({ name, token }) => ({
    name,
    digest: sha256(token),
    fingerprint: tokenFingerprint(token),
  }));
  return (req, res, next) => {
    const presented = BEARER.exec(req.headers.authorization ?? "")?.[1];
    if (presented !== undefined) {
      const digest = sha256(presented);
      let match: (typeof accepted)[number] | undefined;
      // Every token is compared, a match or not: the time taken never says which one matched.
      for (const candidate of accepted) {
        if (timingSafeEqual(digest, candidate.digest) && !match) match = candidate;
      }
      if (match) {
        res.locals.auth = { caller: match.name, tokenFingerprint: match.fingerprint } satisfies AuthLogFields;
        next();
        return;
      }
    }
    reject(req, res.locals, limiter, presented === undefined ? "missing_token" : "invalid_token");
  };
}

// A right token always passes, even from a client over the limit: the tokens are long random
// strings, so the limit is not what stops guessing; what it stops is a client hammering the
// routes, while a lockout of everyone behind one address (a NAT, a proxy without TRUST_PROXY)
// could be set off by anyone there and cut Prometheus off the metrics.
function reject(
  req: Request,
  locals: Record<string, unknown>,
  limiter: FailureLimiter,
  failure: "missing_token" | "invalid_token",
): never {
  const verdict = limiter.fail(req.ip ?? "unknown");
  if (verdict.limited) {
    locals.auth = { failure: "rate_limited", client: req.ip } satisfies AuthLogFields;
    if (verdict.crossed) {
      req.log.warn({ client: req.ip, failures: verdict.failures }, "authentication failures rate-limited");
    }
    throw new HttpError(429, "too_many_requests", "too many failed authentications; retry later", undefined, {
      "Retry-After": String(verdict.retryAfterSeconds),
    });
  }
  locals.auth = { failure, client: req.ip } satisfies AuthLogFields;
  throw new HttpError(401, "unauthorized", "a valid bearer token is required", undefined, {
    "WWW-Authenticate": "Bearer",
  });
}

export interface OperationsAuth {
  /** ADMIN_TOKEN only: /health/details and the operations API. */
  admin: RequestHandler;
  /** METRICS_TOKEN or ADMIN_TOKEN: GET /metrics. */
  metrics: RequestHandler;
}

/** The guards for the configured tokens, sharing one failure limiter. */
export function createOperationsAuth(
  { adminToken, metricsToken }: { adminToken: string | null; metricsToken: string | null },
  limiter: FailureLimiter = createFailureLimiter(),
): OperationsAuth {
  const admin = adminToken === null ? [] : [{ name: "admin", token: adminToken }];
  const metrics = metricsToken === null ? [] : [{ name: "metrics", token: metricsToken }];
  return {
    admin: requireBearer(admin, limiter),
    metrics: requireBearer([...metrics, ...admin], limiter),
  };
}
