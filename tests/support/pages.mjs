// The protocol's paging limits and the check every finished pull must pass.
import { expect } from 'vitest'

export const MAX_EVENTS_PER_MESSAGE = 100
export const MAX_PAYLOAD_BYTES = 900_000
export const MAX_FRAME_BYTES = 1024 * 1024

/** A finished pull's pages: at most 100 events each, only the last one NoMore, `remaining` counting down exactly. */
export const expectWellFormedPages = (pages, total) => {
  expect(pages.length).toBeGreaterThan(0)
  let delivered = 0
  pages.forEach((page, i) => {
    expect(page.batch.length).toBeLessThanOrEqual(MAX_EVENTS_PER_MESSAGE)
    delivered += page.batch.length
    if (i === pages.length - 1) {
      expect(page.pageInfo).toEqual({ _tag: 'NoMore' })
    } else {
      expect(page.batch.length).toBeGreaterThan(0)
      expect(page.pageInfo).toEqual({ _tag: 'MoreKnown', remaining: total - delivered })
    }
  })
  expect(delivered).toBe(total)
}
