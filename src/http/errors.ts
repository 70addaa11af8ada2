// The one error shape, {"error": {code, message, details?, requestId}}, and the middleware that
// turns any thrown error into it. Database failures arrive here already sorted into kinds.
import type { ErrorRequestHandler, RequestHandler } from "express";
import { ZodError, z } from "zod";
import { classifyDatabaseError, type DatabaseErrorKind } from "../db/errors.ts";

export class HttpError extends Error {
  override name = "HttpError";
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    code: string,
    message: string,
    details?: unknown,
    headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.headers = headers;
  }
}

export const notFound: RequestHandler = (req) => {
  throw new HttpError(404, "not_found", `no route for ${req.method} ${req.path.slice(0, 200)}`);
};

/** 415 for a request body that is not JSON; express.json() would silently skip it. */
export const requireJsonBody: RequestHandler = (req, _res, next) => {
  const length = req.headers["content-length"];
  const hasBody = req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
  if (hasBody && !req.is(JSON_TYPES)) {
    throw new HttpError(
      415,
      "unsupported_media_type",
      "request body must be JSON (Content-Type: application/json)",
    );
  }
  next();
};

export const JSON_TYPES = ["application/json", "application/*+json"];

// body-parser's error types, see https://github.com/expressjs/body-parser#errors
const BODY_PARSER_ERRORS: Record<string, [number, string, string]> = {
  "entity.parse.failed": [400, "bad_json", "request body is not valid JSON"],
  "entity.too.large": [413, "payload_too_large", "request body is larger than the limit"],
  "encoding.unsupported": [415, "unsupported_media_type", "request body has an unsupported content encoding"],
  "charset.unsupported": [415, "unsupported_media_type", "request body has an unsupported charset"],
  "request.aborted": [400, "request_aborted", "request was aborted before its body arrived"],
  "request.size.invalid": [400, "bad_request", "request body does not match its Content-Length"],
};

export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof ZodError) {
    const details = error.issues.map(({ path, message, code }) => ({
      path: path.map(String),
      message,
      code,
    }));
    return new HttpError(400, "validation_failed", "request is not valid", details);
  }
  const type = (error as { type?: unknown } | null)?.type;
  const bodyError = typeof type === "string" ? BODY_PARSER_ERRORS[type] : undefined;
  if (bodyError) return new HttpError(...bodyError);
  switch (classifyDatabaseError(error)) {
    case "busy":
      return new HttpError(503, "database_busy", "the database is busy; retry shortly", undefined, {
        "Retry-After": "1",
      });
    case "full":
      return new HttpError(507, "storage_full", "the database has run out of storage space");
    case "constraint":
      return new HttpError(409, "conflict", "the change conflicts with stored data");
    case "unavailable":
      return new HttpError(
        503,
        "database_unavailable",
        "the database is unavailable; retry shortly",
        undefined,
        {
          "Retry-After": "5",
        },
      );
    case "readonly":
      return new HttpError(503, "database_readonly", "the database is read-only", undefined, {
        "Retry-After": "30",
      });
    default:
      break;
  }
  // Other errors that carry a client status. Express's router rejects a malformed percent-encoding
  // in a path parameter ("Failed to decode param '%c3%28'") with a URIError whose status is 400 but
  // which has no `expose` flag, unlike http-errors: only an explicit `expose: false` keeps it a 500.
  const { status, expose } = (error ?? {}) as { status?: unknown; expose?: unknown };
  if (typeof status === "number" && status >= 400 && status < 500 && expose !== false) {
    return new HttpError(status, status === 400 ? "bad_request" : `http_${status}`, (error as Error).message);
  }
  return new HttpError(500, "internal", "internal server error");
}

export const errorHandler: ErrorRequestHandler = (error, req, res, _next) => {
  const httpError = toHttpError(error);
  // pino-http logs the error with the request's own line, stack and all.
  if (httpError.status >= 500) (res as { err?: unknown }).err = error;
  if (res.headersSent) {
    // Too late for a clean error: cut the connection so the client sees a failure, not a short body.
    req.socket.destroy();
    return;
  }
  res.set(httpError.headers).status(httpError.status);
  res.json({
    error: {
      code: httpError.code,
      message: httpError.message,
      ...(httpError.details === undefined ? {} : { details: httpError.details }),
      requestId: req.id,
    },
  });
};

/**
 * The error shape as a schema: the OpenAPI document's one `Error` component, which every error
 * response refers to, and what the contract tests hold errorHandler's output to.
 */
export const errorBody = z
  .strictObject({
    error: z.strictObject({
      code: z.string().meta({ description: "Stable and machine-readable", example: "not_found" }),
      message: z.string().meta({ description: "For people; its wording may change" }),
      details: z
        .array(z.strictObject({ path: z.array(z.string()), message: z.string(), code: z.string() }))
        .optional()
        .meta({ description: "With validation_failed: one entry per problem in the request" }),
      requestId: z
        .string()
        .meta({ description: "Also in the X-Request-Id header: quote it in a bug report" }),
    }),
  })
  .meta({ id: "Error", description: "The one error shape of this API" });

/** errorHandler that also reports each database error's kind (to the metrics). */
export function createErrorHandler({
  onDatabaseError,
}: {
  onDatabaseError?: (kind: DatabaseErrorKind) => void;
}): ErrorRequestHandler {
  return (error, req, res, next) => {
    const kind = onDatabaseError && classifyDatabaseError(error);
    if (kind) onDatabaseError(kind);
    errorHandler(error, req, res, next);
  };
}
