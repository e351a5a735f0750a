#!/usr/bin/env node
import { generateSigningKeys } from './auth/keys.js';

// Prints a new signing-key file for AETHEX_AUTH_SIGNING_KEYS_FILE: `npm run keygen -- [EdDSA|ES256]`.
// To rotate, put the new key first in the existing file's "keys" and keep the old one an access-token lifetime.
const alg = process.argv[2] ?? 'EdDSA';
if (alg !== 'EdDSA' && alg !== 'ES256') {
  process.stderr.write(`keygen: algorithm must be EdDSA or ES256, got ${alg}\n`);
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(await generateSigningKeys(alg), null, 2)}\n`);
