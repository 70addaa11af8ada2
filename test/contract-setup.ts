// Runs before every test file (vitest.config.ts, setupFiles): a test whose in-process app sent a
// response that breaks the app's own /openapi.json fails, with each such response listed.
import { afterEach } from "vitest";
import { checkRecordedResponses } from "./contract.ts";

afterEach(async () => {
  const { failures } = await checkRecordedResponses();
  if (failures.length > 0) {
    throw new Error(`responses that break the API's own document (/openapi.json):\n${failures.join("\n")}`);
  }
});
