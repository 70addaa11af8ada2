// A Router that keeps each route's description beside its handler: the zod schemas the handler
// validates with and the responses it sends. /openapi.json is generated from these declarations
// (src/http/openapi.ts), so a route is documented by declaring its schemas once, here.
import { type RequestHandler, Router } from "express";
import type { ZodObject, ZodType } from "zod";
import { errorBody } from "./errors.ts";

export interface ApiResponse {
  description: string;
  /** The body's schema; none for a response without a body (204). */
  body?: ZodType;
  /** The body's media type: application/json unless given. */
  contentType?: string;
  headers?: ZodObject;
  /** An example body, shown by /docs (which otherwise makes one up from the schema's examples). */
  example?: unknown;
}

export interface ApiOperation {
  /** Unique across the API: client generators name their functions after it. */
  operationId: string;
  summary: string;
  description?: string;
  /** The schemas the handler parses req.params, req.query and req.body with. */
  params?: ZodObject;
  query?: ZodObject;
  body?: ZodType;
  /**
   * What the handler sends: its successes and its own errors (a 404, say). The errors every route
   * shares are added to the document for it: 400 when it takes input, 413 and 415 when it takes a
   * body, 401 when it needs a token, and `default` (the database's 503 and 507, a 500).
   */
  responses: Record<number, ApiResponse>;
  /**
   * "bearer": only with `Authorization: Bearer <token>`; "bearer-optional": public, and says more
   * to a caller with a token. Public when omitted.
   */
  auth?: "bearer" | "bearer-optional";
}

export type HttpMethod = "get" | "post" | "put" | "patch" | "delete";

export interface ApiRoute extends ApiOperation {
  method: HttpMethod;
  /** In Express's syntax, relative to where the router is mounted: "/", "/:id". */
  path: string;
}

type Declare = (path: string, operation: ApiOperation, ...handlers: RequestHandler[]) => void;

export interface ApiRouter extends Record<HttpMethod, Declare> {
  /** What the app mounts. */
  router: Router;
  /** The group these routes are listed under in the document and on /docs. */
  tag: { name: string; description: string };
  routes: ApiRoute[];
}

/** The documented routers, by the path each is mounted at: what /openapi.json describes. */
export type ApiRoutes = Readonly<Record<string, ApiRouter>>;

export function apiRouter(tag: ApiRouter["tag"]): ApiRouter {
  const router = Router();
  const routes: ApiRoute[] = [];
  const declare =
    (method: HttpMethod): Declare =>
    (path, operation, ...handlers) => {
      routes.push({ method, path, ...operation });
      router[method](path, ...handlers);
    };
  return {
    router,
    tag,
    routes,
    get: declare("get"),
    post: declare("post"),
    put: declare("put"),
    patch: declare("patch"),
    delete: declare("delete"),
  };
}

/** A response in the API's one error shape, described by when it happens, with its usual code. */
export function errorResponse(description: string, code: string): ApiResponse {
  return { description, body: errorBody, example: errorExample(code, description) };
}

/** An error body as the service sends it: without one, /docs shows `not_found` for every error. */
export function errorExample(code: string, message: string) {
  return { error: { code, message, requestId: "5b0c2f1e-7d4a-4c1e-9b0a-3f6d2e8c1a77" } };
}
