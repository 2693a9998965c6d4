// The streams "ceiling" for `make bench`: a bare JS Durable Object per stream that does the
// storage and delivery work of the streams scenarios with as little protocol machinery as possible,
// to show what the platform itself costs under the same load (it is not a Durable Streams server).
//
// - The Worker sends each /v1/stream/<name> request to the object named <name> by JS RPC (`serve`),
//   the cheapest way into an object.
// - One SQLite table of messages (seq, data); a JSON body is split into its array's items with
//   JSON.parse / JSON.stringify; reads answer `[item,item,…]` by concatenation, at most 8,192 at a time.
// - Offsets are plain integers in `Stream-Next-Offset`; `-1` is the start. `Stream-Up-To-Date` at
//   the tail; a long-poll's `Stream-Cursor` is the tail.
// - Long-poll readers wait in memory for the next append (204 after 20 s). SSE readers are held by
//   the object itself, one native pipe each, written on every append (no hibernation, one hop).
// - No validation, no producers, no TTLs, no metadata but the content type, no forks, no caching.
import { DurableObject } from 'cloudflare:workers'

const PAGE = 8_192
const LONG_POLL_MS = 20_000
const encoder = new TextEncoder()

export class StreamCeilingDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    this.sql.exec('CREATE TABLE IF NOT EXISTS m (seq INTEGER PRIMARY KEY, data TEXT NOT NULL); CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, content_type TEXT NOT NULL)')
    this.tail = this.sql.exec('SELECT COALESCE(MAX(seq), 0) AS t FROM m').one().t
    const meta = this.sql.exec('SELECT content_type FROM meta').toArray()[0]
    this.json = meta ? meta.content_type.startsWith('application/json') : undefined
    this.waiters = []
    this.readers = new Set()
  }

  serve(request) {
    switch (request.method) {
      case 'PUT':
        return this.create(request)
      case 'POST':
        return this.append(request)
      case 'GET':
        return this.read(new URL(request.url).searchParams)
      default:
        return new Response('method', { status: 405 })
    }
  }

  create(request) {
    const contentType = request.headers.get('content-type') ?? 'application/octet-stream'
    this.sql.exec('INSERT OR REPLACE INTO meta (id, content_type) VALUES (1, ?)', contentType)
    this.json = contentType.startsWith('application/json')
    return new Response(null, { status: 201, headers: { 'stream-next-offset': String(this.tail) } })
  }

  async append(request) {
    const text = await request.text()
    const items = this.json ? [].concat(JSON.parse(text)).map((item) => JSON.stringify(item)) : [text]
    for (const data of items) this.sql.exec('INSERT INTO m (seq, data) VALUES (?, ?)', ++this.tail, data)
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake()
    if (this.readers.size > 0) this.deliver()
    return new Response(null, { status: 204, headers: { 'stream-next-offset': String(this.tail) } })
  }

  page(after) {
    const rows = this.sql.exec('SELECT seq, data FROM m WHERE seq > ? ORDER BY seq LIMIT ?', after, PAGE).toArray()
    const next = rows.length > 0 ? rows[rows.length - 1].seq : after
    return { body: this.json ? `[${rows.map((r) => r.data).join(',')}]` : rows.map((r) => r.data).join(''), next, count: rows.length }
  }

  answer(page) {
    const headers = { 'content-type': this.json ? 'application/json' : 'text/plain', 'stream-next-offset': String(page.next), 'stream-cursor': String(this.tail) }
    if (page.next >= this.tail) headers['stream-up-to-date'] = 'true'
    return new Response(page.body, { headers })
  }

  async read(params) {
    const offset = params.get('offset') ?? '-1'
    const after = offset === '-1' ? 0 : Number(offset)
    const live = params.get('live')
    if (live === 'sse') return this.sse(after)
    if (live === 'long-poll' && after >= this.tail) {
      const woken = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), LONG_POLL_MS)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve(true)
        })
      })
      if (!woken) return new Response(null, { status: 204, headers: { 'stream-next-offset': String(after), 'stream-cursor': String(this.tail) } })
    }
    return this.answer(this.page(after))
  }

  sse(after) {
    const pipe = new IdentityTransformStream()
    const reader = { writer: pipe.writable.getWriter(), at: after }
    this.readers.add(reader)
    this.send(reader, true)
    return new Response(pipe.readable, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } })
  }

  /** What is new for `reader` as a data event and a control event. */
  send(reader, first = false) {
    const page = reader.at < this.tail ? this.page(reader.at) : undefined
    if (!page && !first) return
    let events = ''
    if (page) {
      events += `event: data\ndata: ${page.body}\n\n`
      reader.at = page.next
    }
    events += `event: control\ndata: {"streamNextOffset":"${reader.at}","streamCursor":"${this.tail}","upToDate":true}\n\n`
    reader.writer.write(encoder.encode(events)).catch(() => this.readers.delete(reader))
  }

  /** One read per position, as many writes as readers. */
  deliver() {
    const byPosition = new Map()
    for (const reader of this.readers) {
      let group = byPosition.get(reader.at)
      if (!group) byPosition.set(reader.at, (group = []))
      group.push(reader)
    }
    for (const [at, group] of byPosition) {
      const page = this.page(at)
      if (page.count === 0) continue
      const bytes = encoder.encode(
        `event: data\ndata: ${page.body}\n\nevent: control\ndata: {"streamNextOffset":"${page.next}","streamCursor":"${this.tail}","upToDate":true}\n\n`,
      )
      for (const reader of group) {
        reader.at = page.next
        reader.writer.write(bytes).catch(() => this.readers.delete(reader))
      }
    }
  }
}
