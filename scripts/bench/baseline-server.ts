// The baselines the service is measured against: a bare Express 5 app answering a small static
// JSON, and (--middleware) the same app behind helmet and pino-http with their defaults (a line per
// request on stdout). Listens on a free port and logs it like the service, so the bench starts both alike.
import { parseArgs } from "node:util";
import express from "express";
import helmet from "helmet";
import { pino } from "pino";
import { pinoHttp } from "pino-http";

const { values } = parseArgs({ options: { middleware: { type: "boolean", default: false } } });
const logger = pino(
  { base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
  pino.destination({ fd: 1, sync: true }),
);

const app = express();
app.disable("x-powered-by");
if (values.middleware) app.use(helmet(), pinoHttp());
const payload = { id: 1, title: "a small static document", done: false };
app.get("/", (_req, res) => {
  res.json(payload);
});

const server = app.listen(0, "127.0.0.1", () => {
  const address = server.address();
  logger.info({ port: typeof address === "object" && address ? address.port : 0 }, "listening");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
