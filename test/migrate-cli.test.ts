// scripts/migrate.ts as users run it: status, up, down and new, on a real database file.
import fs from "node:fs";
import path from "node:path";
import { expect, it } from "vitest";
import { listBackups } from "../src/backups/files.ts";
import { describeEngines, engineEnv } from "./engines.ts";
import { cleanupAfterEach, migrationsWith } from "./helpers.ts";

const { tempDir, run } = cleanupAfterEach();

const migrate = (env: Record<string, string>, ...args: string[]) => run("scripts/migrate.ts", args, env);

describeEngines("npm run migrate:*", (engine) => {
  const extension = engine === "sqlite" ? "db" : "dump";
  async function setup() {
    const dir = tempDir();
    const migrationsDir = migrationsWith(dir, {});
    const env = { ...(await engineEnv(engine, dir)), MIGRATIONS_DIR: migrationsDir };
    return { dir, migrationsDir, env: env as typeof env & { BACKUP_DIR: string } };
  }

  it("lists, applies, reverts and re-applies migrations by name", async () => {
    const { env, migrationsDir } = await setup();
    expect(await migrate(env, "status")).toMatchObject({
      code: 0,
      out: ["pending  0001_create_notes", "0 applied, 1 pending"],
    });
    expect(await migrate(env, "up")).toMatchObject({ code: 0, out: ["applied  0001_create_notes"] });
    expect(await migrate(env, "up")).toMatchObject({ code: 0, out: ["nothing to apply"] });

    fs.writeFileSync(
      path.join(migrationsDir, "0002_add_tags.ts"),
      `export async function up(db) { await db.schema.alterTable("notes").addColumn("tags", "text").execute(); }
export async function down(db) { await db.schema.alterTable("notes").dropColumn("tags").execute(); }`,
    );
    const status = await migrate(env, "status", "--json");
    expect(JSON.parse(status.out[0]!)).toEqual({
      applied: ["0001_create_notes"],
      pending: ["0002_add_tags"],
    });

    // The database now holds a table: applying backs it up first, and so does reverting.
    const up = await migrate(env, "up", "--json");
    const applied = JSON.parse(up.out[0]!);
    expect(applied).toEqual({
      applied: ["0002_add_tags"],
      backup: expect.stringMatching(new RegExp(`pre-migration-0002_add_tags\\.${extension}$`)),
    });
    const down = await migrate(env, "down");
    expect(down.code).toBe(0);
    expect(down.out).toEqual([
      expect.stringMatching(new RegExp(`^backup {3}.*pre-rollback-0002_add_tags\\.${extension}$`)),
      "reverted 0002_add_tags",
    ]);
    expect(
      listBackups(env.BACKUP_DIR)
        .map((b) => b.kind)
        .sort(),
    ).toEqual(["pre-migration", "pre-rollback"]);
    expect((await migrate(env, "status")).out.at(-1)).toBe("1 applied, 1 pending");
  });

  it("writes the next numbered migration from the template, which applies and reverts", async () => {
    const { env, migrationsDir } = await setup();
    const created = await migrate(env, "new", "add_widgets");
    expect(created.code).toBe(0);
    const file = path.join(migrationsDir, "0002_add_widgets.ts");
    expect(created.out).toEqual([`created ${path.relative(process.cwd(), file)}`]);
    expect(fs.readFileSync(file, "utf8")).toMatch(
      /export async function up\(db: Kysely<any>, \{ ids \}: MigrationContext\)/,
    );
    expect((await migrate(env, "up")).out).toEqual([
      "applied  0001_create_notes",
      "applied  0002_add_widgets",
    ]);
    expect((await migrate(env, "down")).code).toBe(0);
  });

  it("refuses a bad name or command with a usage line and exit code 2", async () => {
    const { env } = await setup();
    const badName = await migrate(env, "new", "Add-Widgets");
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/lowercase letters, digits and underscores/);
    const badCommand = await migrate(env, "sideways");
    expect(badCommand.code).toBe(2);
    expect(badCommand.stderr).toMatch(/^usage: /);
  });

  it("exits 1 with one line when a migration fails, naming it", async () => {
    const { env, migrationsDir } = await setup();
    fs.writeFileSync(
      path.join(migrationsDir, "0002_broken.ts"),
      'export async function up() { throw new Error("no"); }\n',
    );
    const result = await migrate(env, "up");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^startup failed: migration 0002_broken failed: no\. Rolled back/m);
    expect((await migrate(env, "status")).out.at(-1)).toBe("0 applied, 2 pending");
  });
});
