// The resident memory of a process sampled every few milliseconds while a test does something: a
// bound on memory, not a timing. Sampled by a small Python process so that this process being
// busy (a client decoding pages) leaves no gap in the samples.
import { spawn } from 'node:child_process'

const SAMPLER = `
import select, sys, json
pid = sys.argv[1]
def rss():
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
first = rss(); peak = first or 0; samples = 0
print("ready", flush=True)
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0.004)
    value = rss()
    if value is not None:
        peak = max(peak, value); samples += 1
    if ready and not sys.stdin.read(1):
        break
print(json.dumps({"firstKb": first, "peakKb": peak, "lastKb": value, "samples": samples}), flush=True)
`

/**
 * Starts sampling the RSS of process `pid`. `stop()` resolves with { firstKb, peakKb, lastKb,
 * samples, growthMb } where growthMb is the peak over the first sample.
 */
export const sampleRss = async (pid) => {
  const child = spawn('python3', ['-c', SAMPLER, String(pid)], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await new Promise((resolve, reject) => {
    child.once('error', reject)
    const check = () => (out.startsWith('ready') ? resolve() : setTimeout(check, 5))
    check()
  })
  return {
    stop: () =>
      new Promise((resolve, reject) => {
        child.once('close', () => {
          try {
            const result = JSON.parse(out.slice(out.indexOf('\n') + 1))
            resolve({ ...result, growthMb: (result.peakKb - result.firstKb) / 1024 })
          } catch (e) {
            reject(new Error(`RSS sampler printed ${JSON.stringify(out)}: ${e.message}`))
          }
        })
        child.stdin.end()
      }),
  }
}
