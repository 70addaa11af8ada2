// docker-compose.postgres.yml and the image's optional PostgreSQL client, checked without a Docker
// engine (the container lab run is recorded in docs/engines.md).
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are Compose's ${VAR:-default}
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ROOT } from "./helpers.ts";

const read = (file: string) => fs.readFileSync(path.join(ROOT, file), "utf8");
const customTags = ["!override", "!reset"].flatMap((tag) => [
  { tag, collection: "seq" as const, resolve: (value: unknown) => value },
  { tag, collection: "map" as const, resolve: (value: unknown) => value },
]);
const overlay = parse(read("docker-compose.postgres.yml"), { customTags }) as {
  services: Record<string, any>;
  volumes: Record<string, unknown>;
};

describe("docker-compose.postgres.yml", () => {
  const { db, app } = overlay.services;

  it("runs postgres:15-bookworm on a named volume, healthy once pg_isready says so", () => {
    expect(db.image).toBe("postgres:15-bookworm");
    expect(db.volumes).toEqual(["pgdata:/var/lib/postgresql/data"]);
    expect(overlay.volumes).toHaveProperty("pgdata");
    expect(db.healthcheck.test[0]).toBe("CMD-SHELL");
    expect(db.healthcheck.test[1]).toMatch(/^pg_isready /);
  });

  it("takes credentials from the environment (.env), never from the file", () => {
    expect(db.environment.POSTGRES_PASSWORD).toMatch(/^\$\{POSTGRES_PASSWORD:\?/);
    // Compose's own ${...} interpolation, not JavaScript's.
    expect(app.environment.DATABASE_URL).toBe(
      ["postgres://$", "{POSTGRES_USER:-app}:$", "{POSTGRES_PASSWORD}@db:5432/$", "{POSTGRES_DB:-app}"].join(
        "",
      ),
    );
    expect(read(".env.example")).toMatch(/^# POSTGRES_PASSWORD=$/m);
  });

  it("starts the app once the database is healthy, with a pg_dump of the server's major", () => {
    expect(app.depends_on).toEqual({ db: { condition: "service_healthy" } });
    expect(app.build.args.POSTGRES_CLIENT).toBe(db.image.split(":")[1].split("-")[0]);
    expect(read("Dockerfile")).toMatch(/ARG POSTGRES_CLIENT=""/);
  });

  it("scales: no container name and no fixed host port", () => {
    for (const service of [db, app]) expect(service).not.toHaveProperty("container_name");
    expect(read("docker-compose.postgres.yml")).toMatch(/ports: !override/);
    expect(app.ports).toEqual(["3000"]);
    expect(db).not.toHaveProperty("ports");
  });

  const compose = spawnSync("docker", ["compose", "version"], { encoding: "utf8" });
  it.skipIf(compose.status !== 0)("is accepted by docker compose config over the base file", () => {
    const result = spawnSync(
      "docker",
      ["compose", "-f", "docker-compose.yml", "-f", "docker-compose.postgres.yml", "config", "--quiet"],
      {
        cwd: ROOT,
        encoding: "utf8",
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", POSTGRES_PASSWORD: "example" },
      },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });
});
