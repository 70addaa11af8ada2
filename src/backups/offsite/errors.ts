// The one error type of off-site backups, and the one line an S3 or network failure is told in.

/** A refused or failed off-site operation; nothing local was changed unless the message says so. */
export class OffsiteError extends Error {
  override name = "OffsiteError";
}

/**
 * An S3 or network error in one line: the service's error code and its message (InvalidAccessKeyId,
 * NoSuchBucket...) or the system's (ECONNREFUSED...). Never credentials: the SDK's messages hold none.
 */
export function describeS3Error(error: unknown): string {
  const e = error as {
    name?: string;
    code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  const message = (e.message ?? String(error)).split("\n")[0]!;
  if (e.code) return `${e.code}: ${message}`;
  if (status !== undefined && e.name && e.name !== "Error") return `${e.name} (HTTP ${status}): ${message}`;
  // An error with no message at all (an aggregate of failed connection attempts) keeps its cause's.
  const cause = (error as { errors?: unknown[] }).errors?.[0];
  return message || cause === undefined ? message || String(e.name) : describeS3Error(cause);
}
