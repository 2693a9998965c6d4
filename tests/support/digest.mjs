// A compact fingerprint of a pulled event, computed the same way by the tests and by the client
// Durable Object of the DO-RPC test Worker (which must not keep what it pulls: memory tests read
// the runtime's RSS while it pulls).

/** FNV-1a (32 bits) of a string's UTF-16 code units. */
const fnv1a = (text) => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash
}

/** { seqNum, parentSeqNum, name, clientId, sessionId, argsLength, argsHash } of an encoded event. */
export const eventDigest = (event) => {
  const args = JSON.stringify(event.args ?? null)
  return {
    seqNum: event.seqNum,
    parentSeqNum: event.parentSeqNum,
    name: event.name,
    clientId: event.clientId,
    sessionId: event.sessionId,
    argsLength: args.length,
    argsHash: fnv1a(args),
  }
}
