// The pino logger: JSON lines in every environment; `npm run dev` pipes them through pino-pretty,
// so production never pays for pretty-printing or a transport thread.
import { type Logger, pino } from "pino";
import type { LogLevel } from "./config.ts";

export type { Logger };

/** `fd` 1 (stdout) for the service; command-line tools log to 2 so stdout carries their answer. */
export function createLogger({ logLevel }: { logLevel: LogLevel }, fd: 1 | 2 = 1): Logger {
  return pino(
    { level: logLevel, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd, sync: true }),
  );
}
