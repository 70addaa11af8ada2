// GET /openapi.json, the API's description, and GET /docs, Swagger UI over it. The page's assets
// come from the swagger-ui-dist package through this service: no CDN, works offline. Mounted only
// when API_DOCS is on.
import { createRequire } from "node:module";
import path from "node:path";
import { Router } from "express";
import helmet from "helmet";
import packageJson from "../../package.json" with { type: "json" };
import type { ApiRoutes } from "./api-router.ts";

// The files the page loads; the package's others (its own index.html, the demo's initializer that
// loads a petstore, source maps) are not served.
const ASSETS = new Set(["swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"]);

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${packageJson.name} API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

// A file, not an inline script, so the page's CSP keeps script-src 'self'. No validatorUrl: the
// default sends the document to a public validator.
const INIT = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
});
`;

export function apiDocsRouter(api: ApiRoutes): Router {
  const router = Router();
  const assetDir = path.dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));

  // Generated once, on the first request: the generator is loaded then and not at start-up.
  let document: Promise<string> | undefined;
  router.get("/openapi.json", async (_req, res) => {
    document ??= import("./openapi.ts").then(({ createOpenApiDocument }) =>
      JSON.stringify(createOpenApiDocument(api)),
    );
    res.type("json").send(await document);
  });

  // helmet's policy minus upgrade-insecure-requests, for these pages only: on a plain-HTTP address
  // other than localhost that directive makes the browser fetch the page's scripts over HTTPS, and
  // the page stays blank. Everything still comes from this origin ('self'). Over plain HTTP the
  // browser ignores Cross-Origin-Opener-Policy too, and says so as a console error: not sent then.
  router.use(
    "/docs",
    helmet.contentSecurityPolicy({ directives: { upgradeInsecureRequests: null } }),
    (req, res, next) => {
      if (!req.secure) res.removeHeader("Cross-Origin-Opener-Policy");
      next();
    },
  );
  router.get("/docs", (_req, res) => {
    res.type("html").send(PAGE);
  });
  router.get("/docs/init.js", (_req, res) => {
    res.type("js").send(INIT);
  });
  router.get("/docs/:asset", (req, res, next) => {
    if (!ASSETS.has(req.params.asset)) return next();
    res.sendFile(req.params.asset, { root: assetDir, maxAge: "1h" });
  });

  return router;
}
