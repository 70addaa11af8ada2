// A process that cannot start says why in one line on stderr and exits non-zero. Known failures
// (bad setting, unusable database, failed migration) carry a message written for the operator;
// anything else is unexpected, so its stack goes to the log as well.
import { ConfigError } from "./config.ts";
import { MigrationError } from "./db/migrator.ts";
import { StorageStartupError } from "./db/storage.ts";
import type { Logger } from "./logger.ts";

const EXPECTED = [ConfigError, StorageStartupError, MigrationError];

export function exitWithStartupError(error: unknown, logger?: Logger): never {
  const expected = EXPECTED.some((type) => error instanceof type);
  const message = error instanceof Error ? error.message : String(error);
  if (!expected) logger?.fatal({ err: error }, "startup failed");
  process.stderr.write(`startup failed: ${message.replaceAll("\n", " ")}\n`);
  process.exit(1);
}
