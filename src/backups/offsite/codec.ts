// How an off-site object is encoded: zstd (Node's zlib), then age to the configured recipients when
// there are any. Compression comes first because ciphertext does not compress. age authenticates
// every 64 KiB chunk, so a tampered object fails before its bytes go further; the age library is
// loaded only when something is encrypted or decrypted. Objects decode with the standard CLIs too:
// `age -d -i identity.txt | zstd -d` (docs/offsite-backups.md).
import crypto from "node:crypto";
import fs from "node:fs";
import { pipeline, Readable } from "node:stream";
import zlib from "node:zlib";
import { OffsiteError } from "./errors.ts";

export const COMPRESSION = "zstd";
export const ENCRYPTION = "age";

/** zstd level 3 (its default: 8.6× at 185 MB/s on a VACUUM INTO file here), with a frame checksum. */
const ZSTD_PARAMS = {
  [zlib.constants.ZSTD_c_compressionLevel]: 3,
  // `zstd -d` then notices a damaged unencrypted object by itself.
  [zlib.constants.ZSTD_c_checksumFlag]: 1,
};

// Errors reach the consumer (pipeline destroys every stream with the first error), and a consumer
// that destroys the result (an aborted upload) stops the whole chain down to the file.
const ignore = () => {};

/** The encoded form of `plain`: zstd, then age to `recipients` unless there are none. */
export async function encode(plain: Readable, recipients: readonly string[]): Promise<Readable> {
  const compressed = pipeline(plain, zlib.createZstdCompress({ params: ZSTD_PARAMS }), ignore);
  if (recipients.length === 0) return compressed;
  const { Encrypter } = await import("age-encryption");
  const encrypter = new Encrypter();
  for (const recipient of recipients) encrypter.addRecipient(recipient);
  return Readable.fromWeb(await encrypter.encrypt(Readable.toWeb(compressed) as ReadableStream<Uint8Array>));
}

/**
 * The plain bytes of an encoded object. With `identities`, the object is decrypted first: the
 * header is read before this resolves, so a wrong identity is refused before any output.
 */
export async function decode(encoded: Readable, identities: readonly string[] | null): Promise<Readable> {
  let compressed = encoded;
  if (identities) {
    const { Decrypter } = await import("age-encryption");
    const decrypter = new Decrypter();
    for (const identity of identities) decrypter.addIdentity(identity);
    const decrypted = await decrypter.decrypt(Readable.toWeb(encoded) as ReadableStream<Uint8Array>);
    compressed = Readable.fromWeb(decrypted);
  }
  return pipeline(compressed, zlib.createZstdDecompress(), ignore);
}

/** The identities (AGE-SECRET-KEY-1...) in an age identity file, as age-keygen writes it. */
export function readIdentityFile(file: string): string[] {
  let text: string;
  try {
    // "-": standard input, so a one-off container can be handed the key without a file to mount
    // (whose owner would have to be the container's user).
    text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (error) {
    throw new OffsiteError(`cannot read the age identity file ${file}: ${(error as Error).message}`);
  }
  const identities = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("AGE-SECRET-KEY-"));
  if (identities.length === 0) {
    throw new OffsiteError(
      `${file} holds no age identity (an AGE-SECRET-KEY-1... line, as age-keygen writes)`,
    );
  }
  return identities;
}

/** The SHA-256 (hex) of a stream's bytes: what every object's metadata records of the plain file. */
export async function sha256Of(stream: AsyncIterable<Buffer>): Promise<string> {
  const hash = crypto.createHash("sha256");
  for await (const chunk of stream) hash.update(chunk);
  return hash.digest("hex");
}
