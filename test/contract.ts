// Contract checks: every response an in-process app sends during a test is held to the document
// that app serves at /openapi.json. Its status must be documented for the operation (or fall under
// `default`), its media type must match, and its body must validate against the schema there.
// createTestApp records its app's responses; test/contract-setup.ts fails a test whose responses break
// the document.
import type { IncomingMessage, ServerResponse } from "node:http";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import formats from "ajv-formats";
import type { Express } from "express";
import request from "supertest";

interface RecordedResponse {
  app: Express;
  method: string;
  url: string;
  status: number;
  headers: Record<string, unknown>;
  body: Buffer;
}

export interface CheckedResponse {
  operationId: string;
  /** The documented status it matched: "200", "404", "default". */
  documented: string;
}

const recorded: RecordedResponse[] = [];

/** The app, with each response it sends recorded for checkRecordedResponses(). */
export function recordResponses(app: Express): Express {
  const recording = (req: IncomingMessage, res: ServerResponse) => {
    record(app, req, res);
    return app(req as never, res as never);
  };
  // Everything else (listen, set, locals) is the app's own: `this` inside listen() is `recording`.
  Object.setPrototypeOf(recording, app);
  return recording as unknown as Express;
}

function record(app: Express, req: IncomingMessage, res: ServerResponse) {
  const url = req.url ?? "/";
  const chunks: Buffer[] = [];
  const keep = (chunk: unknown, encoding: unknown) => {
    if (typeof chunk === "string")
      chunks.push(Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8"));
    else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
  };
  const { write, end } = res;
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof res.write;
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    if (typeof chunk !== "function") keep(chunk, rest[0]);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as typeof res.end;
  // "close", not "finish": a client that has read the whole body (Content-Length) may close the
  // socket before a streamed response calls end(), and then "finish" never comes. A response cut
  // short (neither ended nor all its declared bytes written) has nothing to hold to the document.
  res.once("close", () => {
    const declared = Number(res.getHeader("content-length"));
    const written = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    if (!res.writableEnded && written !== declared) return;
    recorded.push({
      app,
      method: req.method ?? "GET",
      url,
      status: res.statusCode,
      headers: res.getHeaders(),
      body: Buffer.concat(chunks),
    });
  });
}

/** Checks, and forgets, the responses recorded so far: what broke the document, and what was checked. */
export async function checkRecordedResponses(): Promise<{ failures: string[]; checked: CheckedResponse[] }> {
  const failures: string[] = [];
  const checked: CheckedResponse[] = [];
  for (const response of recorded.splice(0)) {
    const contract = await contractOf(response.app);
    const result = contract?.check(response);
    if (typeof result === "string") failures.push(result);
    else if (result) checked.push(result);
  }
  return { failures, checked };
}

type Json = any;

interface Contract {
  /** A failure's description; what it matched; undefined when no operation describes the request. */
  check(response: RecordedResponse): string | CheckedResponse | undefined;
}

const contractsByApp = new WeakMap<Express, Promise<Contract | undefined>>();
const contractsByDocument = new Map<string, Contract>();

function contractOf(app: Express): Promise<Contract | undefined> {
  let contract = contractsByApp.get(app);
  if (!contract) {
    contract = request(app)
      .get("/openapi.json")
      .then((res) => {
        // API_DOCS=off: nothing to hold the responses to.
        if (res.status === 404) return undefined;
        if (res.status !== 200) throw new Error(`GET /openapi.json answered ${res.status}: ${res.text}`);
        let known = contractsByDocument.get(res.text);
        if (!known) {
          known = compileContract(JSON.parse(res.text));
          contractsByDocument.set(res.text, known);
        }
        return known;
      });
    contractsByApp.set(app, contract);
  }
  return contract;
}

export function compileContract(document: Json): Contract {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  formats.default(ajv);
  // The document's own references ("#/components/schemas/Note") resolve against it by this name.
  ajv.addSchema({ $id: "openapi.json", components: document.components }, undefined, undefined, false);
  const validators = new Map<Json, ValidateFunction>();
  const validatorFor = (schema: Json) => {
    let validate = validators.get(schema);
    if (!validate) {
      const rebased = JSON.parse(
        JSON.stringify(schema).replaceAll('"#/components/', '"openapi.json#/components/'),
      );
      validate = ajv.compile(rebased);
      validators.set(schema, validate);
    }
    return validate;
  };
  const deref = (value: Json): Json => {
    if (typeof value?.$ref !== "string") return value;
    const target = value.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((node: Json, key: string) => node?.[key.replaceAll("~1", "/").replaceAll("~0", "~")], document);
    if (target === undefined) throw new Error(`the document refers to ${value.$ref}, which it lacks`);
    return deref(target);
  };
  // Express matches paths case-insensitively and with or without a trailing slash.
  const routes = Object.entries(document.paths as Record<string, Json>).map(([path, item]) => ({
    path,
    item,
    pattern: new RegExp(`^${path.replace(/\{[^}]+\}/g, "[^/]+")}/?$`, "i"),
  }));

  return {
    check({ method, url, status, headers, body }) {
      // As Express reads it (parseurl): up to the query or the fragment, dot segments kept.
      const pathname = url.split(/[?#]/)[0]!;
      const route = routes.find((r) => r.pattern.test(pathname));
      const operation = route?.item[method.toLowerCase()];
      if (!route || !operation || method === "HEAD") return undefined;
      const where = `${method} ${url.slice(0, 120)} → ${status}`;
      const documented = [String(status), `${String(status)[0]}XX`, "default"].find(
        (key) => operation.responses[key] !== undefined,
      );
      if (!documented) return `${where}: status not documented for ${operation.operationId}`;
      const response = deref(operation.responses[documented]);

      for (const [name, header] of Object.entries((response.headers ?? {}) as Record<string, Json>)) {
        if (deref(header).required && headers[name.toLowerCase()] === undefined) {
          return `${where}: the required ${name} header is missing`;
        }
      }
      const contentType = String(headers["content-type"] ?? "")
        .split(";")[0]!
        .trim();
      if (!response.content) {
        return body.length === 0
          ? { operationId: operation.operationId, documented }
          : `${where}: a body where the document has none`;
      }
      const media = response.content[contentType];
      if (!media) return `${where}: Content-Type ${contentType || "(none)"} is not documented`;
      let value: unknown = body.toString("utf8");
      if (contentType === "application/json" || contentType.endsWith("+json")) {
        try {
          value = JSON.parse(value as string);
        } catch {
          return `${where}: the body is not JSON`;
        }
      }
      const validate = validatorFor(media.schema);
      if (!validate(value)) {
        // errorsText leaves out which property is extra: name it, or the failure hides the field.
        const problems = (validate.errors ?? [])
          .map((e) => {
            const extra =
              e.keyword === "additionalProperties" ? ` (${String(e.params.additionalProperty)})` : "";
            return `body${e.instancePath} ${e.message}${extra}`;
          })
          .join(", ");
        return `${where}: ${problems}\n  body: ${body.toString("utf8").slice(0, 300)}`;
      }
      return { operationId: operation.operationId, documented };
    },
  };
}
