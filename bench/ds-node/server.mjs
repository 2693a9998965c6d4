// The Node reference Durable Streams server (@durable-streams/server), for `make bench` to run the
// streams scenarios against side by side with our Worker. In memory by default: its fastest mode, the
// bar to measure against (with DATA_DIR set it is file-backed, LMDB and append-only logs, and on this
// kind of machine several times slower to append). Prints `ready <url>` once it listens on
// 127.0.0.1:PORT.

import { DurableStreamTestServer } from '@durable-streams/server'

const server = new DurableStreamTestServer({
  host: '127.0.0.1',
  port: Number(process.env.PORT ?? 0),
  dataDir: process.env.DATA_DIR || undefined,
  // Our Worker does not compress either: the same bytes on the wire.
  compression: false,
})
const url = await server.start()
console.log(`ready ${url}`)
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.stop().finally(() => process.exit(0)))
}
