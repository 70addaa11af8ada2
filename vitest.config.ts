import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Holds every in-process app's responses to its own /openapi.json (test/contract.ts).
    setupFiles: ["test/contract-setup.ts"],
    // One line when the PostgreSQL side is skipped; a clear failure when TEST_DATABASE_URL is unusable.
    globalSetup: ["test/global-setup.ts"],
    // Child processes and real files: give them room, and isolate native handles per file. The
    // timeouts only catch a hang: a test that starts several processes in a row can take tens of
    // seconds on a loaded machine, and no test may depend on the machine's speed.
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
