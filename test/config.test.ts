import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.ts";

describe("config", () => {
  it("applies the documented defaults, resolved against the working directory", () => {
    const config = loadConfig({}, "/srv/app");
    expect(config).toMatchObject({
      nodeEnv: "development",
      port: 3000,
      host: "0.0.0.0",
      databasePath: "/srv/app/data/app.db",
      backupDir: "/srv/app/data/backups",
      logLevel: "info",
      migrateOnStart: true,
      shutdownTimeoutMs: 10_000,
      bodyLimit: "100kb",
      trustProxy: false,
    });
    expect(path.basename(config.migrationsDir)).toBe("migrations");
  });

  it("reads every variable and returns a frozen object", () => {
    const config = loadConfig(
      {
        PORT: "8080",
        HOST: "127.0.0.1",
        DATABASE_PATH: "/var/db/x.db",
        BACKUP_DIR: "/var/backups",
        LOG_LEVEL: "debug",
        NODE_ENV: "production",
        MIGRATE_ON_START: "false",
        SHUTDOWN_TIMEOUT_MS: "2500",
        BODY_LIMIT: "1mb",
        TRUST_PROXY: "loopback, 10.0.0.0/8",
      },
      "/x",
    );
    expect(config).toMatchObject({
      port: 8080,
      host: "127.0.0.1",
      databasePath: "/var/db/x.db",
      backupDir: "/var/backups",
      logLevel: "debug",
      nodeEnv: "production",
      migrateOnStart: false,
      shutdownTimeoutMs: 2500,
      bodyLimit: "1mb",
      trustProxy: "loopback, 10.0.0.0/8",
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("treats an empty variable as unset", () => {
    expect(loadConfig({ PORT: "", LOG_LEVEL: "" }, "/x")).toMatchObject({ port: 3000, logLevel: "info" });
  });

  it.each([
    ["TRUST_PROXY", "true", true],
    ["TRUST_PROXY", "2", 2],
    ["TRUST_PROXY", "false", false],
    ["MIGRATE_ON_START", "0", false],
    ["MIGRATE_ON_START", "yes", true],
  ])("parses %s=%s", (name, value, expected) => {
    const key = name === "TRUST_PROXY" ? "trustProxy" : "migrateOnStart";
    expect(loadConfig({ [name]: value }, "/x")[key]).toBe(expected);
  });

  it.each([
    ["30s", 30_000],
    ["15m", 900_000],
    ["6h", 21_600_000],
    ["1d", 86_400_000],
    ["off", null],
    ["", null],
  ])("reads BACKUP_INTERVAL=%s as %s ms", (value, ms) => {
    expect(loadConfig({ BACKUP_INTERVAL: value }, "/x").backupIntervalMs).toBe(ms);
  });

  it("keeps 10 backups with no age limit and no schedule by default", () => {
    expect(loadConfig({}, "/x")).toMatchObject({
      backupIntervalMs: null,
      backupKeep: 10,
      backupMaxAgeDays: null,
    });
    expect(loadConfig({ BACKUP_KEEP: "3", BACKUP_MAX_AGE_DAYS: "14" }, "/x")).toMatchObject({
      backupKeep: 3,
      backupMaxAgeDays: 14,
    });
  });

  it.each([
    ["PORT", "http", /invalid PORT="http": expected a whole number from 0 to 65535/],
    ["PORT", "70000", /invalid PORT="70000": expected at most 65535/],
    ["LOG_LEVEL", "loud", /invalid LOG_LEVEL="loud": .*"info"/],
    ["NODE_ENV", "staging", /invalid NODE_ENV="staging"/],
    ["MIGRATE_ON_START", "maybe", /invalid MIGRATE_ON_START="maybe": expected true or false/],
    ["SHUTDOWN_TIMEOUT_MS", "-1", /invalid SHUTDOWN_TIMEOUT_MS="-1"/],
    ["BODY_LIMIT", "lots", /invalid BODY_LIMIT="lots": expected a size such as 100kb/],
    ["TRUST_PROXY", "not-an-ip", /invalid TRUST_PROXY="not-an-ip": "not-an-ip" is not an IP address/],
    [
      "BACKUP_INTERVAL",
      "6 hours",
      /invalid BACKUP_INTERVAL="6 hours": expected a duration such as 30s, 15m, 6h or 1d, or off/,
    ],
    ["BACKUP_INTERVAL", "0s", /invalid BACKUP_INTERVAL="0s": expected at least 1s/],
    ["BACKUP_KEEP", "0", /invalid BACKUP_KEEP="0": expected at least 1/],
    ["BACKUP_MAX_AGE_DAYS", "a week", /invalid BACKUP_MAX_AGE_DAYS="a week": expected a whole number/],
  ])("rejects %s=%s with one line naming the variable, value and what is allowed", (name, value, message) => {
    let error: unknown;
    try {
      loadConfig({ [name]: value }, "/x");
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain("\n");
  });
});
