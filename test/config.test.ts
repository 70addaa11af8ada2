import path from "node:path";
import { inspect } from "node:util";
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

  describe("off-site backups", () => {
    const RECIPIENT = "age12253r7qjeagmsaxgt0adf4fp99tfxgvgk8q7mu3m2ft652dwr4ysdu7n8k";
    const OTHER = "age10ekxzf5e5vxgl0eekr44k5sl0yxjl95upt2fss0ku4swre5alv0sz2zsru";
    const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    it("are off, with no drill, unless BACKUP_S3_URL is set", () => {
      expect(loadConfig({ AWS_ACCESS_KEY_ID: "AKIA", BACKUP_AGE_RECIPIENT: RECIPIENT }, "/x")).toMatchObject({
        offsite: null,
        backupDrillIntervalMs: null,
      });
    });

    it("reads every variable, keeping BACKUP_KEEP as the remote default", () => {
      const config = loadConfig(
        {
          BACKUP_S3_URL: "s3://my-bucket/backups/app/",
          AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
          AWS_SECRET_ACCESS_KEY: SECRET,
          AWS_REGION: "auto",
          AWS_ENDPOINT_URL: "https://example.r2.cloudflarestorage.com",
          BACKUP_S3_FORCE_PATH_STYLE: "true",
          BACKUP_AGE_RECIPIENT: `${RECIPIENT}, ${OTHER}`,
          BACKUP_AGE_IDENTITY_FILE: "keys/backup.txt",
          BACKUP_KEEP: "7",
          BACKUP_S3_PRUNE: "off",
          BACKUP_DRILL_INTERVAL: "1d",
        },
        "/srv/app",
      );
      expect(config.offsite).toEqual({
        url: "s3://my-bucket/backups/app",
        bucket: "my-bucket",
        prefix: "backups/app",
        region: "auto",
        endpoint: "https://example.r2.cloudflarestorage.com",
        forcePathStyle: true,
        credentials: { accessKeyId: "AKIAEXAMPLE" },
        recipients: [RECIPIENT, OTHER],
        identityFile: "/srv/app/keys/backup.txt",
        keep: 7,
        prune: false,
      });
      expect(config.offsite!.credentials!.secretAccessKey).toBe(SECRET);
      expect(config.backupDrillIntervalMs).toBe(86_400_000);
    });

    it("takes AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL, and defaults to AWS in us-east-1 with the SDK's own credentials", () => {
      expect(loadConfig({ BACKUP_S3_URL: "s3://b12", BACKUP_S3_KEEP: "30" }, "/x").offsite).toMatchObject({
        url: "s3://b12",
        prefix: "",
        region: "us-east-1",
        endpoint: null,
        forcePathStyle: false,
        credentials: null,
        recipients: [],
        identityFile: null,
        keep: 30,
        prune: true,
      });
      const both = { AWS_ENDPOINT_URL_S3: "http://127.0.0.1:9000", AWS_ENDPOINT_URL: "http://other:1" };
      expect(loadConfig({ BACKUP_S3_URL: "s3://b12/p", ...both }, "/x").offsite!.endpoint).toBe(
        "http://127.0.0.1:9000",
      );
    });

    it("never shows the secret key: not in JSON, not in util.inspect, not in a configuration error", () => {
      const config = loadConfig(
        {
          BACKUP_S3_URL: "s3://bucket/p",
          AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
          AWS_SECRET_ACCESS_KEY: SECRET,
          AWS_SESSION_TOKEN: "session-token-secret",
        },
        "/x",
      );
      for (const shown of [JSON.stringify(config), inspect(config, { depth: null, showHidden: false })]) {
        expect(shown).toContain("AKIAEXAMPLE");
        expect(shown).not.toContain(SECRET);
        expect(shown).not.toContain("session-token-secret");
      }
      expect(() =>
        loadConfig({ BACKUP_S3_URL: "s3://bucket/p", AWS_SECRET_ACCESS_KEY: SECRET }, "/x"),
      ).toThrow("missing AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together");
    });

    it.each([
      [
        "BACKUP_S3_URL",
        "https://bucket.s3.amazonaws.com/x",
        /invalid BACKUP_S3_URL="https:.*": expected s3:\/\/bucket\/prefix/,
      ],
      [
        "BACKUP_S3_URL",
        "s3://My_Bucket/x",
        /invalid BACKUP_S3_URL="s3:\/\/My_Bucket\/x": expected s3:\/\/bucket\/prefix/,
      ],
      ["BACKUP_S3_URL", "s3://bucket/a//b", /invalid BACKUP_S3_URL=.*no empty, \. or \.\. segments/],
      [
        "AWS_ENDPOINT_URL_S3",
        "localhost:9000",
        /invalid AWS_ENDPOINT_URL_S3="localhost:9000": expected an http:\/\/ or https:\/\/ URL/,
      ],
      ["AWS_REGION", "EU West", /invalid AWS_REGION="EU West": expected a region name/],
      [
        "BACKUP_AGE_RECIPIENT",
        "age1abc",
        /invalid BACKUP_AGE_RECIPIENT="age1abc": "age1abc" is not an age X25519 public key: expected age1 followed by 58 characters/,
      ],
      // One character changed: the bech32 checksum no longer matches.
      ["BACKUP_AGE_RECIPIENT", `${RECIPIENT.slice(0, -1)}q`, /is not an age X25519 public key/],
      [
        "BACKUP_AGE_RECIPIENT",
        "AGE-SECRET-KEY-1QQQ",
        /"AGE-SECRET-KEY-1QQQ" is not an age X25519 public key/,
      ],
      ["BACKUP_S3_PRUNE", "lifecycle", /invalid BACKUP_S3_PRUNE="lifecycle": expected on or off/],
      ["BACKUP_S3_KEEP", "0", /invalid BACKUP_S3_KEEP="0": expected at least 1/],
      [
        "BACKUP_S3_FORCE_PATH_STYLE",
        "sure",
        /invalid BACKUP_S3_FORCE_PATH_STYLE="sure": expected true or false/,
      ],
      [
        "BACKUP_DRILL_INTERVAL",
        "weekly",
        /invalid BACKUP_DRILL_INTERVAL="weekly": expected a duration such as 30s/,
      ],
    ])("rejects %s=%s in one line", (name, value, message) => {
      const run = () => loadConfig({ BACKUP_S3_URL: "s3://bucket/p", [name]: value }, "/x");
      expect(run).toThrow(ConfigError);
      expect(run).toThrow(message);
      expect(run).not.toThrow(/\n/);
    });

    it("refuses a scheduled drill of encrypted backups without the identity to decrypt them", () => {
      const env = {
        BACKUP_S3_URL: "s3://bucket/p",
        BACKUP_AGE_RECIPIENT: RECIPIENT,
        BACKUP_DRILL_INTERVAL: "1d",
      };
      expect(() => loadConfig(env, "/x")).toThrow(
        /^invalid BACKUP_DRILL_INTERVAL: a drill of encrypted off-site backups needs BACKUP_AGE_IDENTITY_FILE/,
      );
      expect(loadConfig({ ...env, BACKUP_AGE_IDENTITY_FILE: "/k" }, "/x").backupDrillIntervalMs).toBe(
        86_400_000,
      );
    });
  });
});
