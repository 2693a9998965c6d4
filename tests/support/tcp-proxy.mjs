// A loopback TCP proxy in front of a test worker that can "black-hole" the connections it carries:
// their bytes are dropped in both directions while the TCP connections stay open, like a network
// stall (a phone changing networks, a NAT dropping state). Connections made afterwards pass normally.
// Used to drive the real client's ping watchdog into a silent reconnect (livestore #1365).

import net from 'node:net'

/**
 * @param {number} targetPort  port of the worker on 127.0.0.1
 * @returns {Promise<{ port: number, url: string, opened: () => number, established: () => number,
 *   blackholeAll: () => number, close: () => Promise<void> }>}
 */
export const startStallProxy = async (targetPort) => {
  const conns = new Set()
  let opened = 0
  let established = 0
  const server = net.createServer((client) => {
    opened++
    const upstream = net.connect(targetPort, '127.0.0.1')
    const conn = { client, upstream, blackholed: false, answered: false }
    conns.add(conn)
    client.on('data', (d) => {
      if (!conn.blackholed) upstream.write(d)
    })
    upstream.on('data', (d) => {
      if (!conn.answered) {
        conn.answered = true
        established++
      }
      if (!conn.blackholed) client.write(d)
    })
    const end = () => {
      conns.delete(conn)
      client.destroy()
      upstream.destroy()
    }
    // a black-holed connection ignores the peer's FIN/close too, like a dead network path
    client.on('close', () => (conn.blackholed ? client.destroy() : end()))
    upstream.on('close', () => (conn.blackholed ? upstream.destroy() : end()))
    client.on('error', () => {})
    upstream.on('error', () => {})
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Connections accepted so far. */
    opened: () => opened,
    /** Connections the worker answered (attempts while it was down do not count). */
    established: () => established,
    /** Stalls every connection open now; returns how many. */
    blackholeAll: () => {
      let n = 0
      for (const conn of conns) {
        if (!conn.blackholed) n++
        conn.blackholed = true
      }
      return n
    },
    close: async () => {
      for (const conn of conns) {
        conn.client.destroy()
        conn.upstream.destroy()
      }
      conns.clear()
      await new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
