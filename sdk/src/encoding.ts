// Byte helpers for the HTTP clients, written against web APIs only (TextEncoder, WebCrypto) so
// they run unchanged in browsers and Node 20+: no Buffer, no node: imports.

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

const ENCODE = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));
const EQUALS = 61;

/** Standard base64 (RFC 4648 §4, `+/`, padded with `=`) of `bytes`. */
export function toBase64(bytes: Uint8Array): string {
  const n = bytes.length;
  // ASCII codes first, then one decode: much faster than growing a string character by character.
  const out = new Uint8Array(Math.ceil(n / 3) * 4);
  let o = 0;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out[o++] = ENCODE[v >> 18] as number;
    out[o++] = ENCODE[(v >> 12) & 63] as number;
    out[o++] = ENCODE[(v >> 6) & 63] as number;
    out[o++] = ENCODE[v & 63] as number;
  }
  if (n - i > 0) {
    const two = n - i === 2;
    const v = ((bytes[i] as number) << 16) | (two ? (bytes[i + 1] as number) << 8 : 0);
    out[o++] = ENCODE[v >> 18] as number;
    out[o++] = ENCODE[(v >> 12) & 63] as number;
    out[o++] = two ? (ENCODE[(v >> 6) & 63] as number) : EQUALS;
    out[o++] = EQUALS;
  }
  return new TextDecoder().decode(out);
}

/**
 * Decodes standard base64; padding is optional. Throws a TypeError on any character outside the
 * alphabet, misplaced padding, or an impossible length (never returns wrong bytes silently).
 */
export function fromBase64(text: string): Uint8Array {
  let end = text.length;
  if (end % 4 === 0 && end > 0 && text.charCodeAt(end - 1) === EQUALS) {
    end--;
    if (text.charCodeAt(end - 1) === EQUALS) end--;
  }
  if (end % 4 === 1) throw new TypeError(`invalid base64: ${text.length} characters`);
  const out = new Uint8Array(Math.floor((end * 3) / 4));
  const digit = (at: number): number => {
    const c = text.charCodeAt(at);
    const d = c < 128 ? (DECODE[c] as number) : -1;
    if (d < 0) throw new TypeError(`invalid base64: unexpected ${JSON.stringify(text[at])} at ${at}`);
    return d;
  };
  let o = 0;
  let i = 0;
  for (; i + 3 < end; i += 4) {
    const v = (digit(i) << 18) | (digit(i + 1) << 12) | (digit(i + 2) << 6) | digit(i + 3);
    out[o++] = v >> 16;
    out[o++] = (v >> 8) & 255;
    out[o++] = v & 255;
  }
  const rest = end - i;
  if (rest === 2) {
    const v = (digit(i) << 18) | (digit(i + 1) << 12);
    out[o++] = v >> 16;
  } else if (rest === 3) {
    const v = (digit(i) << 18) | (digit(i + 1) << 12) | (digit(i + 2) << 6);
    out[o++] = v >> 16;
    out[o++] = (v >> 8) & 255;
  }
  return out;
}

/** `sha256:<lowercase hex>` of `bytes`: the control plane's save checksum format. */
export async function sha256Checksum(bytes: Uint8Array): Promise<string> {
  // WebCrypto takes views over plain ArrayBuffers only; copy the rare shared-memory view.
  const view = bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', view));
  let hex = '';
  for (const b of digest) hex += b.toString(16).padStart(2, '0');
  return `sha256:${hex}`;
}

/** UTF-8 bytes of a string, or the bytes themselves. */
export function toBytes(data: Uint8Array | string): Uint8Array {
  return typeof data === 'string' ? new TextEncoder().encode(data) : data;
}
