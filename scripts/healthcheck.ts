// The container's HEALTHCHECK: GET /health on this container's port, exit 0 when it answers 200 and
// 1 otherwise. The slim image has no curl; Node's fetch with a timeout reports a hung server too.
// usage: node scripts/healthcheck.ts [--timeout-ms 3000]
import { parseArgs } from "node:util";
import { loadConfig } from "../src/config.ts";

const { values } = parseArgs({ options: { "timeout-ms": { type: "string", default: "3000" } } });
const timeoutMs = Number(values["timeout-ms"]);

try {
  const { host, port } = loadConfig();
  // A wildcard address is not something to connect to: the loopback reaches the same socket.
  const target = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  const response = await fetch(`http://${target}:${port}/health`, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await response.text();
  // Docker keeps this output in the container's health log (`docker inspect`).
  console.log(`${response.status} ${body.slice(0, 500)}`);
  process.exit(response.status === 200 ? 0 : 1);
} catch (error) {
  const { name, message, cause } = error as Error & { cause?: { code?: string } };
  if (name === "TimeoutError") console.log(`no answer from /health within ${timeoutMs} ms`);
  else console.log(cause?.code ? `${message}: ${cause.code}` : message);
  process.exit(1);
}
