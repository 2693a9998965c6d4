// Server-side CPU and memory of one `wrangler dev` instance, read from /proc (Linux only).
//
// `wrangler dev` (node) runs two workerd processes in its process group: the entry proxy, which
// listens on the port the harness chose (--socket-addr=entry=127.0.0.1:<port>) and forwards every
// request and WebSocket frame, and the runtime that runs the Worker and its Durable Objects.
// Measured: wrangler 4.86 involves the entry workerd and wrangler's node process in every local D1
// query (about 2 ms and 4 ms of CPU per push with D1, next to nothing with DO SQLite), so
// "server CPU" is the sum over all three: runtime workerd + entry workerd + wrangler node.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'

let clockTicks = 100
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
} catch {}

const readText = (file) => {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

/** Fields of /proc/<pid>/stat after the `(comm)` field: [state, ppid, pgrp, …]. */
const statFields = (pid) => {
  const text = readText(`/proc/${pid}/stat`)
  if (text === undefined) return undefined
  const close = text.lastIndexOf(')')
  return { comm: text.slice(text.indexOf('(') + 1, close), rest: text.slice(close + 2).trim().split(' ') }
}

const cmdline = (pid) => (readText(`/proc/${pid}/cmdline`) ?? '').split('\0').join(' ')

const allPids = () => fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number)

/**
 * The processes of the `wrangler dev` that serves `port`, found by the wrangler command line
 * (`--port <port>`) and then by process group (startWorker spawns wrangler as a group leader):
 * { runtime, aux: pid[], node: pid[], all: pid[] }. `runtime` is the workerd that runs the Worker
 * (the one not listening on `port`); `aux` the other workerd (the entry proxy on `port`, which in
 * wrangler 4.86 also takes part in every D1 query); `node` wrangler's own node processes (which
 * also work for every D1 query).
 */
export const findServer = (port) => {
  const pids = allPids()
  const wrangler = pids.find((pid) => {
    const cmd = cmdline(pid)
    return cmd.includes('wrangler') && cmd.includes(' dev ') && cmd.includes(`--port ${port} `)
  })
  if (wrangler === undefined) throw new Error(`no wrangler dev process for port ${port}`)
  const pgrp = statFields(wrangler)?.rest[2]
  const group = pids.filter((pid) => statFields(pid)?.rest[2] === pgrp)
  const workerd = group.filter((pid) => statFields(pid)?.comm.startsWith('workerd'))
  const node = group.filter((pid) => statFields(pid)?.comm.startsWith('node'))
  const entry = workerd.filter((pid) => cmdline(pid).includes(`--socket-addr=entry=127.0.0.1:${port} `))
  const runtime = workerd.filter((pid) => !entry.includes(pid))
  if (runtime.length !== 1 || entry.length !== 1) {
    throw new Error(`expected 2 workerd processes (entry proxy, runtime) for wrangler ${wrangler}, found ${workerd.join(', ')}`)
  }
  return { runtime: runtime[0], aux: entry, node, all: [runtime[0], ...entry, ...node] }
}

/** utime+stime of a process in seconds (includes threads that already exited). */
const statCpu = (pid) => {
  const s = statFields(pid)
  if (!s) return undefined
  return (Number(s.rest[11]) + Number(s.rest[12])) / clockTicks
}

/** Per-thread on-CPU time in ns (/proc/<pid>/task/<tid>/schedstat): tid → ns. */
const threadCpu = (pid) => {
  const threads = new Map()
  let tids = []
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`)
  } catch {
    return threads
  }
  for (const tid of tids) {
    const text = readText(`/proc/${pid}/task/${tid}/schedstat`)
    if (text !== undefined) threads.set(tid, Number(text.split(' ')[0]))
  }
  return threads
}

const rssKb = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readText(`/proc/${pid}/status`) ?? '')
  return m ? Number(m[1]) : 0
}

/** A CPU snapshot of the given processes. */
export const cpuSnapshot = (pids) =>
  new Map(pids.map((pid) => [pid, { stat: statCpu(pid), threads: threadCpu(pid) }]))

/**
 * CPU seconds each process used between two snapshots. Uses the nanosecond per-thread counters
 * when the set of threads did not change (the usual case), else the 10 ms utime+stime ticks.
 */
export const cpuDelta = (before, after) => {
  const result = {}
  for (const [pid, b] of before) {
    const a = after.get(pid)
    if (!a || a.stat === undefined || b.stat === undefined) continue
    const sameThreads = a.threads.size === b.threads.size && [...b.threads.keys()].every((tid) => a.threads.has(tid))
    let seconds
    if (sameThreads && a.threads.size > 0) {
      let ns = 0
      for (const [tid, v] of a.threads) ns += v - b.threads.get(tid)
      seconds = ns / 1e9
    } else {
      seconds = a.stat - b.stat
    }
    result[pid] = seconds
  }
  return result
}

/** Resident memory of the processes in kB: { total, byPid }. */
export const rss = (pids) => {
  const byPid = Object.fromEntries(pids.map((pid) => [pid, rssKb(pid)]))
  return { total: Object.values(byPid).reduce((a, b) => a + b, 0), byPid }
}

/**
 * Measures a server: `begin()` takes CPU snapshots of its processes and of this process; the
 * returned `end()` gives { serverCpuS, runtimeCpuS, auxCpuS, nodeCpuS, loadGenCpuS } in seconds.
 * `rss()` is the resident memory of the workerd that runs the Worker (and of the aux one).
 */
export const makeMeter = (procs) => {
  const begin = () => {
    const server = cpuSnapshot(procs.all)
    const self = process.cpuUsage()
    return () => {
      const delta = cpuDelta(server, cpuSnapshot(procs.all))
      const own = process.cpuUsage(self)
      const sum = (pids) => pids.reduce((total, pid) => total + (delta[pid] ?? 0), 0)
      const runtimeCpuS = sum([procs.runtime])
      const auxCpuS = sum(procs.aux)
      const nodeCpuS = sum(procs.node)
      return { serverCpuS: runtimeCpuS + auxCpuS + nodeCpuS, runtimeCpuS, auxCpuS, nodeCpuS, loadGenCpuS: (own.user + own.system) / 1e6 }
    }
  }
  /** RSS in kB: `total` is the runtime workerd's (it holds the sockets and the objects). */
  const rssNow = () => {
    const all = rss([procs.runtime, ...procs.aux])
    return { total: all.byPid[procs.runtime], auxKb: all.total - all.byPid[procs.runtime], byPid: all.byPid }
  }
  return { begin, rss: rssNow }
}

/** TCP ports a process listens on (from /proc/net/tcp{,6} and its socket fds). */
export const listeningPorts = (pid) => {
  const inodes = new Set()
  let fds = []
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`)
  } catch {
    return []
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1])
    } catch {}
  }
  const ports = []
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (readText(file) ?? '').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) ports.push(parseInt(f[1].split(':')[1], 16))
    }
  }
  return ports
}
