// /docs in a real browser: Debian's Chromium, driven by playwright-core, against the service run
// as a child process. Skipped, with one line, where /usr/bin/chromium is absent (.ci/run installs it).
import fs from "node:fs";
import path from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import { callService, cleanupAfterEach, startService } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const { defer, tempDir, track } = cleanupAfterEach();

// One browser for the file (starting Chromium takes seconds); each test gets a fresh context, as
// isolated as a new profile. playwright gives the browser a fresh temporary --user-data-dir of its own.
let browser: Browser | undefined;
beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) return;
  const { chromium } = await import("playwright-core");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // api.test resolves to loopback, yet the browser treats it as any other plain-HTTP host.
      "--host-resolver-rules=MAP api.test 127.0.0.1",
    ],
  });
});
afterAll(() => browser?.close());

async function newContext(ctx: TestContext): Promise<BrowserContext> {
  if (!browser) {
    ctx.skip(
      `needs Chromium at ${CHROMIUM}: apt-get install chromium (.ci/run does), then npx vitest run test/docs-browser.test.ts`,
    );
  }
  const context = await browser.newContext();
  defer(() => context.close());
  return context;
}

/**
 * Opens the page, collecting what would be a problem: console errors (Chromium reports CSP
 * violations there too), uncaught exceptions, failed requests, and any request that leaves `origin`,
 * which is refused: the page must work offline.
 */
async function openDocs(
  context: BrowserContext,
  origin: string,
): Promise<{ page: Page; problems: string[] }> {
  const problems: string[] = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    problems.push(`request off this service: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  // Chromium logs CSP violations as console errors already; this names the directive as well.
  await page.addInitScript({
    content: `document.addEventListener("securitypolicyviolation", (e) =>
      console.error("CSP violation: " + e.violatedDirective + " blocked " + e.blockedURI));`,
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`exception: ${error.message}`));
  page.on("requestfailed", (request) =>
    problems.push(`failed: ${request.url()} ${request.failure()?.errorText}`),
  );
  await page.goto(`${origin}/docs`);
  // Swagger UI names each operation's block after its tag and operationId.
  await page.locator("#operations-notes-createNote").waitFor();
  return { page, problems };
}

describe("/docs in headless Chromium", () => {
  it("renders offline with no console error or CSP violation, and its Try it out creates a note", async (ctx) => {
    const context = await newContext(ctx);
    const service = track(await startService({ DATABASE_PATH: path.join(tempDir(), "app.db") }));
    const origin = `http://127.0.0.1:${service.port}`;
    const { page, problems } = await openDocs(context, origin);

    const operations = await page.locator(".opblock-summary-path").allInnerTexts();
    expect(operations).toEqual(expect.arrayContaining(["/api/notes", "/api/notes/{id}", "/health"]));

    const create = page.locator("#operations-notes-createNote");
    await create.locator(".opblock-summary").click();
    await create.getByRole("button", { name: "Try it out" }).click();
    await create.locator("textarea.body-param__text").fill(JSON.stringify({ title: "sent from /docs" }));
    await create.getByRole("button", { name: "Execute" }).click();
    await expect
      .poll(() => create.locator(".live-responses-table tr.response .response-col_status").textContent())
      .toBe("201");

    // The request reached the service: the note is stored.
    const { body } = await callService(service.port, "GET", "/api/notes");
    expect(body.items).toEqual([expect.objectContaining({ id: 1, title: "sent from /docs", body: "" })]);
    expect(problems).toEqual([]);

    const screenshot = process.env.DOCS_SCREENSHOT;
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  });

  it("renders on a plain-HTTP address that is not loopback, where HTTPS upgrades would blank it", async (ctx) => {
    const context = await newContext(ctx);
    const service = track(await startService({ DATABASE_PATH: path.join(tempDir(), "app.db") }));
    const { page, problems } = await openDocs(context, `http://api.test:${service.port}`);
    // The notes (5) and health (3: live, the public check, the details behind ADMIN_TOKEN) operations.
    expect(await page.locator(".opblock").count()).toBe(8);
    expect(problems).toEqual([]);
  });
});
