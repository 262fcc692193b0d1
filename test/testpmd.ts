// DPDK testpmd (Debian 12: package dpdk-dev, /usr/bin/dpdk-testpmd) as a VM-less network peer,
// for the tests and bench:net. This machine has no hugepages, so every testpmd runs with
// --no-huge -m 512 (anonymous memory; `--in-memory` cannot go with it: "EAL: Option
// --legacy-mem is not compatible with --in-memory"), --no-pci, a unique --file-prefix (its
// runtime directory /var/run/dpdk/PREFIX is removed after it exits), -l 0,1 (testpmd needs a
// main lcore and a forwarding one: "No cores defined for forwarding" with one) and
// --total-num-mbufs=8192 (the default pool of 155456 mbufs does not fit 512 MiB: "Creation of
// mbuf pool for socket 0 failed: Cannot allocate memory"). Non-interactive testpmd forwards
// until its stdin closes: stop() closes it, then waits (bounded) and kills if needed.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

export const TESTPMD = '/usr/bin/dpdk-testpmd';

export function haveTestpmd(): boolean {
  return existsSync(TESTPMD);
}

export interface Testpmd {
  readonly child: ChildProcess;
  readonly args: string[];
  /** stdout + stderr so far. */
  log(): string;
  /** Resolves once `text` appears in the output (bounded). */
  waitFor(text: string | RegExp, what: string, ms?: number): Promise<void>;
  /** Closes stdin (testpmd prints its final statistics and exits), SIGKILL after `ms`; removes its runtime directory. */
  stop(ms?: number): Promise<string>;
}

/**
 * The EAL and testpmd arguments of one testpmd: `vdev` devices, then testpmd's own `app` options.
 * `forwardCpu`: the CPU of the forwarding lcore (the main lcore takes the other one). By default
 * the main lcore is CPU 0 and forwarding runs on CPU 1; two testpmds that both busy-poll (a
 * source and a sink) must forward on different CPUs, or the two polling threads share one CPU in
 * scheduler time slices and each ring fills or drains only while its side runs (bench:net saw
 * ~30 k pps between two testpmds that way).
 */
export function testpmdArgs(vdevs: string[], app: string[], prefix = `vt-${randomBytes(4).toString('hex')}`, forwardCpu: 0 | 1 = 1): string[] {
  return ['-l', '0,1', '--main-lcore', forwardCpu === 1 ? '0' : '1', '--no-huge', '-m', '512', '--no-pci', '--file-prefix', prefix, ...vdevs.flatMap((v) => ['--vdev', v]), '--', '--total-num-mbufs=8192', ...app];
}

/**
 * Starts testpmd. `nice`: run it at that niceness (coreutils nice; bench:net runs the busy-polling
 * source and sink at 19 around serve net, so the processes under test get the CPU they ask for
 * and the pollers take what is left).
 */
export function startTestpmd(args: string[], options: { nice?: number } = {}): Testpmd {
  // Line-buffered stdout (stdbuf, coreutils): into a pipe testpmd's messages would sit in a 4 KiB buffer.
  const cmd = existsSync('/usr/bin/stdbuf') ? ['/usr/bin/stdbuf', '-oL', TESTPMD, ...args] : [TESTPMD, ...args];
  if (options.nice !== undefined) cmd.unshift('/usr/bin/nice', '-n', String(options.nice));
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const take = (d: Buffer): void => {
    out += d.toString();
    if (out.length > 4 << 20) out = out.slice(-(1 << 20));
    for (const w of waiters) w();
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<void>((res) => child.on('exit', () => res()));
  child.on('exit', () => {
    for (const w of waiters) w();
  });
  const prefix = args[args.indexOf('--file-prefix') + 1];
  return {
    child,
    args,
    log: () => out,
    waitFor(text, what, ms = 30_000) {
      return new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (typeof text === 'string' ? out.includes(text) : text.test(out)) done(null);
          else if (child.exitCode !== null || child.signalCode !== null) done(new Error(`testpmd exited before ${what}: ${out.slice(-3000)}`));
        };
        const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}: ${out.slice(-3000)}`)), ms);
        const done = (err: Error | null): void => {
          clearTimeout(timer);
          waiters.delete(check);
          if (err) reject(err);
          else resolve();
        };
        waiters.add(check);
        check();
      });
    },
    async stop(ms = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin!.end('\n');
        const timer = setTimeout(() => child.kill('SIGKILL'), ms);
        await exited;
        clearTimeout(timer);
      }
      if (prefix !== undefined && /^vt-[0-9a-f]{8}$/.test(prefix)) rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
      return out;
    },
  };
}
