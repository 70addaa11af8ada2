// The pino logger: JSON lines in every environment; `npm run dev` pipes them through pino-pretty,
// so production never pays for pretty-printing or a transport thread.
import { type Logger, pino } from "pino";
import type { LogLevel } from "./config.ts";

export type { Logger };

/**
 * `fd` 1 (stdout) for the service; command-line tools log to 2 so stdout carries their answer.
 * Written asynchronously: a synchronous write is a system call per request, which cost a third of
 * the service's throughput (docs/performance.md); lines that pile up while one write is in flight
 * go out together. pino flushes what is pending when the process exits, even through
 * process.exit() or a crash; only a SIGKILL can lose the last few milliseconds of lines.
 */
export function createLogger({ logLevel }: { logLevel: LogLevel }, fd: 1 | 2 = 1): Logger {
  return pino(
    {
      level: logLevel,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // pino-http's request serializer (src/app.ts) keeps no header at all; this covers any line
      // that logs a request's headers some other way.
      redact: { paths: ["req.headers.authorization", "req.headers.cookie"], censor: "[redacted]" },
    },
    pino.destination({ fd, sync: false }),
  );
}
