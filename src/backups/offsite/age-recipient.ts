// The shape of an age X25519 recipient (`age1` + 58 bech32 characters, as `age-keygen` prints),
// checksum included: config.ts rejects a mistyped key at startup rather than at the first upload.
// No dependency: the age library itself is loaded only when an upload needs it.
// Format: https://age-encryption.org/v1 ("X25519 recipient stanza"); bech32: BIP-173.

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let checksum = 1;
  for (const value of values) {
    const top = checksum >>> 25;
    checksum = ((checksum & 0x1ffffff) << 5) ^ value;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) checksum ^= GENERATORS[i]!;
  }
  return checksum;
}

/** True for a well-formed `age1...` X25519 public key (lowercase, 62 characters, valid checksum). */
export function isAgeX25519Recipient(text: string): boolean {
  if (!/^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/.test(text)) return false;
  const hrp = [..."age"].map((c) => c.charCodeAt(0));
  const data = [...text.slice(4)].map((c) => CHARSET.indexOf(c));
  return polymod([...hrp.map((c) => c >> 5), 0, ...hrp.map((c) => c & 31), ...data]) === 1;
}
