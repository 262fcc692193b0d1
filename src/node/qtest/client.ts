/**
 * A client of QEMU's qtest protocol (QEMU's softmmu/qtest.c): QEMU runs its machine and device
 * models with no guest CPU running, and this process reads and writes the guest's physical
 * address space, I/O ports and interrupt lines over a line protocol. That lets the project's
 * drivers drive QEMU's OWN virtio device models (virtio-rng, virtio-blk, ...) the way a guest
 * kernel would, with nothing booted.
 *
 * The protocol is request/response, one line each ("readl 0xfeb00000" -> "OK 0x...74726976"),
 * with asynchronous "IRQ raise N" / "IRQ lower N" lines in between once irq_intercept_in is on.
 * The channel is QEMU's stdin/stdout (`-qtest stdio`): no socket path to create or clean up.
 *
 * Lifetime: QEMU never outlives this process. It is started through util-linux's `setpriv
 * --pdeathsig KILL` when that is installed (the kernel kills QEMU when this process dies, even
 * by SIGKILL), and killed on this process's exit otherwise. Every request is bounded: a reply
 * that does not come within `timeoutMs` is a QtestError (`timeout`) and the QEMU is stopped
 * (the stream would be out of step); QEMU dying fails every pending request with `exited` and
 * the tail of its stderr.
 *
 * Node only.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { VirtioTsError } from '../../errors.js';

/**
 * What went wrong with a qtest QEMU:
 * - `spawn-failed`: the QEMU binary could not be started (not installed: `cause` holds ENOENT);
 * - `exited`: QEMU exited or was killed (bad arguments, a crash, close()); the message carries
 *   its exit status and the end of its stderr;
 * - `timeout`: QEMU did not answer a request in time (the QEMU is stopped);
 * - `refused`: QEMU answered FAIL / ERR (e.g. irq_intercept_in on a path that names no device);
 * - `protocol`: an answer this client cannot parse.
 */
export type QtestErrorKind = 'spawn-failed' | 'exited' | 'timeout' | 'refused' | 'protocol';

/** The qtest layer's error; `kind` says which of {@link QtestErrorKind}. */
export class QtestError extends VirtioTsError<QtestErrorKind> {}

/** How to start a qtest QEMU. */
export interface QtestLaunchOptions {
  /** QEMU binary (default `qemu-system-x86_64`, or $QEMU). */
  qemu?: string;
  /** Every QEMU argument but the qtest ones (-machine, -device, -object, ...). */
  args: readonly string[];
  /**
   * File descriptors QEMU inherits, from fd 3 on (e.g. a memfd for guest RAM: QEMU opens it as
   * /dev/fd/3).
   */
  fds?: readonly number[];
  /** Bound of each request's reply and of QEMU's start, in milliseconds (default 30000). */
  timeoutMs?: number;
}

/** Called for each IRQ line change QEMU reports (after irq_intercept_in). */
export type IrqListener = (line: number, raised: boolean) => void;

interface Pending {
  command: string;
  resolve(reply: string): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

const STDERR_KEEP = 4096;
/** The longest line taken from QEMU (characters). */
const MAX_LINE = 64 << 20;

let setprivAvailable: boolean | null = null;
/** Whether util-linux's setpriv with --pdeathsig can be used (checked once). */
function hasSetpriv(): boolean {
  if (setprivAvailable === null) {
    const r = spawnSync('setpriv', ['--help'], { encoding: 'utf8' });
    setprivAvailable = r.status === 0 && r.stdout.includes('--pdeathsig');
  }
  return setprivAvailable;
}

/** Live QEMUs of this process, killed when it exits (the fallback when setpriv is missing). */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** A running qtest QEMU and the protocol to it. Requests are queued and answered in order. */
export class QtestClient {
  /** The QEMU process id. */
  readonly pid: number;
  /** The full command line QEMU was started with (for reproductions). */
  readonly commandLine: readonly string[];
  /** Set once QEMU is gone: why (the error pending and later requests fail with). */
  exitError: QtestError | null = null;
  /** Resolves when QEMU has exited (never rejects). */
  readonly exited: Promise<void>;

  private readonly child: ChildProcess;
  private readonly pending: Pending[] = [];
  private readonly irqListeners: IrqListener[] = [];
  /**
   * How long each command may wait for its answer (ms), from `timeoutMs` at launch. It may be
   * changed between commands: e.g. a generous bound while a machine starts on a loaded host,
   * a short one where a test expects no answer at all.
   */
  timeoutMs: number;
  /** The start of a line not complete yet, in pieces. */
  private readonly partial: string[] = [];
  private partialLength = 0;
  private stderrTail = '';

  private constructor(child: ChildProcess, commandLine: string[], timeoutMs: number) {
    this.child = child;
    this.pid = child.pid ?? -1;
    this.commandLine = commandLine;
    this.timeoutMs = timeoutMs;
    live.add(child);
    killAllOnExit();
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => this.onData(chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_KEEP);
    });
    // Writes after QEMU died fail with EPIPE: the exit handler reports it.
    child.stdin!.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        live.delete(child);
        const status = signal !== null ? `killed by ${signal}` : `exit status ${code}`;
        const tail = this.stderrTail.trim();
        this.gone(new QtestError('exited', `QEMU (pid ${this.pid}) ${status}${tail ? `: ${tail}` : ''}`));
        resolve();
      });
    });
  }

  /**
   * Starts QEMU with `-qtest stdio` and waits until it answers (a first request). A QtestError:
   * `spawn-failed` when the binary cannot be run, `exited` when QEMU refuses its arguments.
   */
  static async launch(options: QtestLaunchOptions): Promise<QtestClient> {
    const qemu = options.qemu ?? process.env.QEMU ?? 'qemu-system-x86_64';
    const qemuArgs = [...options.args, '-qtest', 'stdio', '-qtest-log', '/dev/null'];
    const [cmd, args] = hasSetpriv() ? ['setpriv', ['--pdeathsig', 'KILL', '--', qemu, ...qemuArgs]] : [qemu, qemuArgs];
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe', ...(options.fds ?? [])] });
    const spawned = await new Promise<Error | null>((resolve) => {
      child.once('spawn', () => resolve(null));
      child.once('error', (err) => resolve(err));
    });
    if (spawned !== null) throw new QtestError('spawn-failed', `cannot start ${cmd}: ${spawned.message}`, { cause: spawned });
    const client = new QtestClient(child, [qemu, ...qemuArgs], options.timeoutMs ?? 30000);
    // The first request (a harmless read of guest address 0) waits until QEMU is up and answering.
    try {
      await client.request('readb 0x0');
    } catch (err) {
      await client.close();
      // setpriv exits 126 / 127 when it cannot execute QEMU (util-linux's EX_EXEC_FAILED / EX_EXEC_ENOENT).
      if (err instanceof QtestError && err.kind === 'exited' && (child.exitCode === 126 || child.exitCode === 127) && cmd === 'setpriv') {
        throw new QtestError('spawn-failed', `cannot start ${qemu}: ${err.message}`, { cause: err });
      }
      throw err;
    }
    return client;
  }

  /** The command line as a shell would take it (for a reproduction). */
  shellCommand(): string {
    return this.commandLine.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
  }

  /** Registers a listener for IRQ line changes (after {@link irqInterceptIn}). */
  onIrq(listener: IrqListener): void {
    this.irqListeners.push(listener);
  }

  // ---------------------------------------------------------------- the protocol

  /** Sends one request line and resolves with the text after "OK" (QtestError on FAIL/ERR). */
  async request(command: string): Promise<string> {
    if (this.exitError !== null) throw this.exitError;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new QtestError('timeout', `QEMU (pid ${this.pid}) did not answer "${command}" within ${this.timeoutMs} ms`);
        this.gone(err);
        this.child.kill('SIGKILL');
      }, this.timeoutMs);
      this.pending.push({ command, resolve, reject, timer });
      this.child.stdin!.write(command + '\n');
    });
  }

  private onData(chunk: string): void {
    let from = 0;
    for (;;) {
      // Only the new chunk is searched: a long reply arrives in many chunks.
      const nl = chunk.indexOf('\n', from);
      if (nl < 0) break;
      const line = this.partial.length === 0 ? chunk.slice(from, nl) : this.partial.join('') + chunk.slice(from, nl);
      this.partial.length = 0;
      this.partialLength = 0;
      from = nl + 1;
      this.onLine(line);
    }
    if (from < chunk.length) {
      this.partial.push(chunk.slice(from));
      this.partialLength += chunk.length - from;
      // No reply is this long (a b64read of 48 MiB is 64 MiB of text): a QEMU gone wrong.
      if (this.partialLength > MAX_LINE) {
        this.partial.length = 0;
        this.partialLength = 0;
        this.gone(new QtestError('protocol', `QEMU (pid ${this.pid}) sent more than ${MAX_LINE} bytes without a line end`));
        this.child.kill('SIGKILL');
      }
    }
  }

  private onLine(line: string): void {
    if (line.startsWith('IRQ ')) {
      const [, what, num] = line.split(' ');
      const n = Number(num);
      if ((what === 'raise' || what === 'lower') && Number.isInteger(n)) {
        for (const l of this.irqListeners) l(n, what === 'raise');
      }
      return;
    }
    const p = this.pending.shift();
    if (p === undefined) return; // nothing asked: not ours to interpret
    clearTimeout(p.timer);
    if (line === 'OK' || line.startsWith('OK ')) p.resolve(line.slice(3));
    else if (line.startsWith('FAIL') || line.startsWith('ERR')) p.reject(new QtestError('refused', `QEMU refused "${p.command}": ${line}`));
    else p.reject(new QtestError('protocol', `unexpected reply to "${p.command}": ${JSON.stringify(line.slice(0, 200))}`));
  }

  private gone(err: QtestError): void {
    if (this.exitError === null) this.exitError = err;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(this.exitError);
    }
  }

  private static hex(n: number | bigint): string {
    return '0x' + n.toString(16);
  }

  private parseNumber(reply: string, command: string): bigint {
    if (!/^0x[0-9a-fA-F]+$/.test(reply)) throw new QtestError('protocol', `"${command}" answered ${JSON.stringify(reply)}, not a number`);
    return BigInt(reply);
  }

  private async readValue(cmd: string, addr: number | bigint): Promise<bigint> {
    const command = `${cmd} ${QtestClient.hex(addr)}`;
    return this.parseNumber(await this.request(command), command);
  }

  // ---------------------------------------------------------------- memory and I/O

  /** Reads a byte of guest-physical memory (RAM or a device's registers). */
  async readb(addr: number): Promise<number> {
    return Number(await this.readValue('readb', addr));
  }
  /** Reads 16 bits (little-endian on x86). */
  async readw(addr: number): Promise<number> {
    return Number(await this.readValue('readw', addr));
  }
  /** Reads 32 bits. */
  async readl(addr: number): Promise<number> {
    return Number(await this.readValue('readl', addr));
  }
  /** Reads 64 bits. */
  async readq(addr: number): Promise<bigint> {
    return this.readValue('readq', addr);
  }
  /** Writes a byte of guest-physical memory. */
  async writeb(addr: number, value: number): Promise<void> {
    await this.request(`writeb ${QtestClient.hex(addr)} ${QtestClient.hex(value & 0xff)}`);
  }
  /** Writes 16 bits. */
  async writew(addr: number, value: number): Promise<void> {
    await this.request(`writew ${QtestClient.hex(addr)} ${QtestClient.hex(value & 0xffff)}`);
  }
  /** Writes 32 bits. */
  async writel(addr: number, value: number): Promise<void> {
    await this.request(`writel ${QtestClient.hex(addr)} ${QtestClient.hex(value >>> 0)}`);
  }
  /** Writes 64 bits. */
  async writeq(addr: number, value: bigint): Promise<void> {
    await this.request(`writeq ${QtestClient.hex(addr)} ${QtestClient.hex(BigInt.asUintN(64, value))}`);
  }
  /** Reads `size` (1, 2, 4 or 8) bytes as a number (8: a bigint). */
  async readSized(addr: number, size: 1 | 2 | 4 | 8): Promise<number | bigint> {
    if (size === 8) return this.readq(addr);
    return size === 1 ? this.readb(addr) : size === 2 ? this.readw(addr) : this.readl(addr);
  }
  /** Writes `size` (1, 2, 4 or 8) bytes. */
  async writeSized(addr: number, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    if (size === 8) return this.writeq(addr, BigInt(value));
    const v = Number(BigInt.asUintN(32, BigInt(value)));
    return size === 1 ? this.writeb(addr, v) : size === 2 ? this.writew(addr, v) : this.writel(addr, v);
  }
  /** Reads `length` bytes (at most 48 MiB at once) of guest-physical memory (b64read). */
  async read(addr: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    if (length > (MAX_LINE / 4) * 3) throw new RangeError(`b64read of ${length} bytes: read at most ${(MAX_LINE / 4) * 3} at once`);
    const reply = await this.request(`b64read ${QtestClient.hex(addr)} ${QtestClient.hex(length)}`);
    const bytes = Buffer.from(reply, 'base64');
    if (bytes.length !== length) throw new QtestError('protocol', `b64read of ${length} bytes answered ${bytes.length}`);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  }
  /** Writes bytes to guest-physical memory (b64write). */
  async write(addr: number, data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    await this.request(`b64write ${QtestClient.hex(addr)} ${QtestClient.hex(data.length)} ${Buffer.from(data.buffer, data.byteOffset, data.length).toString('base64')}`);
  }
  /** Reads an 8-bit I/O port. */
  async inb(port: number): Promise<number> {
    return Number(await this.readValue('inb', port));
  }
  /** Reads a 16-bit I/O port. */
  async inw(port: number): Promise<number> {
    return Number(await this.readValue('inw', port));
  }
  /** Reads a 32-bit I/O port. */
  async inl(port: number): Promise<number> {
    return Number(await this.readValue('inl', port));
  }
  /** Writes an 8-bit I/O port. */
  async outb(port: number, value: number): Promise<void> {
    await this.request(`outb ${QtestClient.hex(port)} ${QtestClient.hex(value & 0xff)}`);
  }
  /** Writes a 16-bit I/O port. */
  async outw(port: number, value: number): Promise<void> {
    await this.request(`outw ${QtestClient.hex(port)} ${QtestClient.hex(value & 0xffff)}`);
  }
  /** Writes a 32-bit I/O port. */
  async outl(port: number, value: number): Promise<void> {
    await this.request(`outl ${QtestClient.hex(port)} ${QtestClient.hex(value >>> 0)}`);
  }
  /** Reads 1, 2 or 4 bytes of I/O port space. */
  async inSized(port: number, size: 1 | 2 | 4): Promise<number> {
    return size === 1 ? this.inb(port) : size === 2 ? this.inw(port) : this.inl(port);
  }
  /** Writes 1, 2 or 4 bytes of I/O port space. */
  async outSized(port: number, size: 1 | 2 | 4, value: number): Promise<void> {
    return size === 1 ? this.outb(port, value) : size === 2 ? this.outw(port, value) : this.outl(port, value);
  }

  // ---------------------------------------------------------------- interrupts and time

  /**
   * Intercepts the gpio-in lines of the device at `qomPath` (on x86: `ioapic`): every level
   * change is reported to the {@link onIrq} listeners. QEMU allows one intercepted device.
   */
  async irqInterceptIn(qomPath: string): Promise<void> {
    await this.request(`irq_intercept_in ${qomPath}`);
  }

  /**
   * Advances QEMU's virtual clock by `ns` nanoseconds, or to its next timer deadline when
   * omitted. Only under the qtest accelerator (`-accel qtest`), where the clock stands still
   * otherwise; a QEMU built without it (Debian's 7.2) runs TCG, its clock runs by itself, and
   * QEMU refuses this (QtestError `refused`).
   */
  async clockStep(ns?: number): Promise<bigint> {
    const command = ns === undefined ? 'clock_step' : `clock_step ${ns}`;
    const reply = await this.request(command);
    if (!/^\d+$/.test(reply)) throw new QtestError('protocol', `"${command}" answered ${JSON.stringify(reply)}`);
    return BigInt(reply);
  }

  /** Kills QEMU (SIGKILL) and waits until it is gone; pending requests fail with `exited`. */
  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    // Our ends of the pipes go too: a process QEMU started (none should) holding them cannot keep
    // 'close' from coming.
    const destroyPipes = () => {
      for (const pipe of [this.child.stdin, this.child.stdout, this.child.stderr]) pipe?.destroy();
    };
    if (this.child.exitCode !== null || this.child.signalCode !== null) destroyPipes();
    else this.child.once('exit', destroyPipes);
    await this.exited;
  }
}
