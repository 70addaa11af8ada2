// The bucket off-site backups go to: an S3 client built from Config. The AWS SDK (23 MB, ~110 ms to
// import) is loaded here by dynamic import, so a service without BACKUP_S3_URL never loads it.
import type { S3Client } from "@aws-sdk/client-s3";
import type { OffsiteConfig } from "../../config.ts";

export type S3Sdk = typeof import("@aws-sdk/client-s3");
export type Upload = typeof import("@aws-sdk/lib-storage").Upload;

export interface Bucket {
  client: S3Client;
  sdk: S3Sdk;
  Upload: Upload;
  name: string;
  prefix: string;
  /** s3://bucket/prefix, for messages. */
  url: string;
  close(): void;
}

/** How long a connection may take to open, and a request may sit without a byte moving. */
const CONNECTION_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 120_000;

export async function openBucket(config: OffsiteConfig): Promise<Bucket> {
  const [sdk, { Upload }] = await Promise.all([import("@aws-sdk/client-s3"), import("@aws-sdk/lib-storage")]);
  // Since v3.729 the SDK sends CRC32 checksums by default: an x-amz-checksum-crc32 header on each
  // buffered part (what lib-storage sends), an aws-chunked body with a trailer when a body streams.
  // Several S3-compatible services refuse them (Cloudflare R2 answers 501, Backblaze
  // MalformedTrailerError), and s3rver, which the tests use, stores the aws-chunked framing as the
  // object's bytes (100,053 bytes kept for a 100,000-byte file). Litestream turns them off for any
  // non-AWS endpoint too. Integrity does not rest on them: every object carries the SHA-256 of the
  // plain file, checked after each download (docs/offsite-backups.md, "Checksums"; OFFSITE notes).
  const checksums = isAwsEndpoint(config.endpoint) ? "WHEN_SUPPORTED" : "WHEN_REQUIRED";
  const client = new sdk.S3Client({
    region: config.region,
    ...(config.endpoint && { endpoint: config.endpoint }),
    forcePathStyle: config.forcePathStyle,
    ...(config.credentials && {
      credentials: {
        accessKeyId: config.credentials.accessKeyId,
        secretAccessKey: config.credentials.secretAccessKey,
        ...(config.credentials.sessionToken && { sessionToken: config.credentials.sessionToken }),
      },
    }),
    requestChecksumCalculation: checksums,
    responseChecksumValidation: checksums,
    // A bucket in another region than AWS_REGION answers 301; follow it rather than fail.
    followRegionRedirects: true,
    requestHandler: { connectionTimeout: CONNECTION_TIMEOUT_MS, requestTimeout: IDLE_TIMEOUT_MS },
    // The uploader retries on its own schedule, with backoff; the SDK's own retries (3 by default)
    // would only make one failed attempt slower to report.
    maxAttempts: 2,
  });
  return {
    client,
    sdk,
    Upload,
    name: config.bucket,
    prefix: config.prefix,
    url: config.url,
    close: () => client.destroy(),
  };
}

/** AWS itself: no endpoint configured, or one of AWS's own S3 hosts. */
export function isAwsEndpoint(endpoint: string | null): boolean {
  if (endpoint === null) return true;
  return /(^|\.)amazonaws\.com(\.cn)?$/.test(new URL(endpoint).hostname);
}
