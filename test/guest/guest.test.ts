// End to end: a real QEMU boots a real Debian kernel whose virtio drivers use virtio-ts
// devices through `virtio-ts serve` (vhost-user). In CI a missing prerequisite is a failure;
// elsewhere the test says what is missing and skips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '../../../..');
const bin = join(root, 'dist/src/cli/main.js');
const guest = join(root, '.guest');
const qemu = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();
const missing = [!qemu && 'qemu-system-x86_64', !existsSync(join(guest, 'vmlinux')) && '.guest/vmlinux (scripts/guest/build-guest.sh)', !existsSync(join(guest, 'initramfs.cpio')) && '.guest/initramfs.cpio'].filter(Boolean);
const khz = (() => {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(Number(m[1]) * 1000) : 0;
})();

interface Run {
  results: Map<string, string>;
  serveLog: string;
  console: string;
}

/** What a test can do while its guest runs. */
interface Running {
  /** Resolves when the guest's console has printed a line matching `re` (rejects if QEMU ends first). */
  waitFor(re: RegExp): Promise<void>;
  /** Runs a QMP command on the QEMU monitor (the reply's "return"). */
  qmp(command: string, args?: Record<string, unknown>): Promise<unknown>;
}

/** A QMP client: one command at a time, events skipped. */
class Qmp {
  private buffer = '';
  private waiting: ((msg: Record<string, unknown>) => void) | null = null;
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let nl;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buffer.slice(0, nl)) as Record<string, unknown>;
        this.buffer = this.buffer.slice(nl + 1);
        if ('event' in msg) continue;
        const w = this.waiting;
        this.waiting = null;
        w?.(msg);
      }
    });
  }

  static async connect(path: string): Promise<Qmp> {
    const socket = createConnection(path);
    await new Promise((res, rej) => socket.once('connect', res).once('error', rej));
    const q = new Qmp(socket);
    await q.next(); // greeting
    await q.run('qmp_capabilities');
    return q;
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((res) => (this.waiting = res));
  }

  async run(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) }) + '\n');
    const msg = await reply;
    if ('error' in msg) throw new Error(`QMP ${command}: ${JSON.stringify(msg.error)}`);
    return msg.return;
  }

  close(): void {
    this.socket.destroy();
  }
}

async function boot(kind: 'rng' | 'blk', device: string, serveArgs: string[], machine: string[] = [], during?: (g: Running) => Promise<void>, test: string = kind): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-guest-'));
  const sock = join(dir, `${kind}.sock`);
  const serve = spawn(process.execPath, [bin, 'serve', kind, '--socket-path', sock, ...serveArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  let serveLog = '';
  serve.stderr.on('data', (d) => (serveLog += d));
  try {
    for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(existsSync(sock), `virtio-ts serve did not listen: ${serveLog}`);
    const args = [
      ...machine,
      '-accel', 'tcg', '-cpu', 'max', '-m', '256M',
      '-object', 'memory-backend-memfd,id=mem,size=256M,share=on', '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
      '-kernel', join(guest, 'vmlinux'), '-initrd', join(guest, 'initramfs.cpio'),
      '-append', `console=ttyS0 panic=-1 quiet vt.test=${test} tsc_early_khz=${khz}`,
      '-chardev', `socket,id=c0,path=${sock}`, '-device', device,
    ];
    const qmpPath = join(dir, 'qmp.sock');
    if (during) args.push('-qmp', `unix:${qmpPath},server=on,wait=off`);
    const q = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let ended = false;
    const watchers = new Set<() => void>();
    const onOutput = (d: Buffer) => {
      out += d.toString();
      for (const w of watchers) w();
    };
    q.stdout.on('data', onOutput);
    q.stderr.on('data', onOutput);
    const killer = setTimeout(() => q.kill('SIGKILL'), 90_000);
    const exited = new Promise<number | null>((res) =>
      q.once('exit', (code) => {
        ended = true;
        for (const w of watchers) w();
        res(code);
      }),
    );
    let qmp: Qmp | null = null;
    const running: Running = {
      waitFor: (re) =>
        new Promise<void>((res, rej) => {
          const check = () => {
            if (re.test(out)) {
              watchers.delete(check);
              res();
            } else if (ended) {
              watchers.delete(check);
              rej(new Error(`QEMU ended before the guest printed ${re}`));
            }
          };
          watchers.add(check);
          check();
        }),
      qmp: async (command, cmdArgs) => {
        qmp ??= await Qmp.connect(qmpPath);
        return qmp.run(command, cmdArgs);
      },
    };
    let duringError: unknown = null;
    const duringDone = during ? during(running).catch((e: unknown) => (duringError = e)) : Promise.resolve();
    const status = await exited;
    clearTimeout(killer);
    await duringDone;
    (qmp as Qmp | null)?.close();
    if (duringError !== null) throw duringError;
    assert.equal(status, 0, `qemu exited ${status}: ${out.slice(-2000)}`);
    const results = new Map<string, string>();
    for (const m of out.matchAll(/^VT-RESULT (\S+) ?(.*)$/gm)) results.set(m[1], m[2].trim());
    assert.match(out, /VT-END/, `the guest test did not finish: ${out.slice(-2000)}`);
    return { results, serveLog, console: out };
  } finally {
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

function noViolations(run: Run): void {
  assert.doesNotMatch(run.serveLog, /"severity":"violation"/, `the monitor saw Linux break a rule:\n${run.serveLog}`);
}

function guestTest(name: string, fn: () => Promise<void>): void {
  test(name, async (t) => {
    if (missing.length > 0) {
      if (process.env.CI === 'true') assert.fail(`real-guest prerequisites missing in CI: ${missing.join(', ')}`);
      t.skip(`prerequisites missing: ${missing.join(', ')} (.ci/run installs them)`);
      return;
    }
    await fn();
  });
}

guestTest('Linux reads /dev/hwrng from virtio-ts serve rng (vhost-user-rng-pci)', async () => {
  const run = await boot('rng', 'vhost-user-rng-pci,chardev=c0', []);
  assert.equal(run.results.get('rng-current'), 'virtio_rng.0');
  assert.match(run.results.get('rng-bytes') ?? '', /^[0-9a-f]{128}$/);
  assert.notEqual(run.results.get('rng-bytes'), '0'.repeat(128));
  noViolations(run);
});

const MICROVM = ['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false'];
guestTest('Linux reads /dev/hwrng from virtio-ts serve rng on microvm (virtio-mmio)', async () => {
  const run = await boot('rng', 'vhost-user-rng,chardev=c0', [], ['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false']);
  assert.match(run.results.get('rng-bytes') ?? '', /^[0-9a-f]{128}$/);
  noViolations(run);
});

const BLK_MATRIX: [string, string, string[], string[]][] = [
  ['pc, split ring', 'vhost-user-blk-pci,chardev=c0,num-queues=1', [], []],
  ['pc, packed=on', 'vhost-user-blk-pci,chardev=c0,num-queues=1,packed=on', [], []],
  ['pc, event_idx=off, indirect_desc=off', 'vhost-user-blk-pci,chardev=c0,num-queues=1,event_idx=off,indirect_desc=off', [], []],
  ['pc, num-queues=2', 'vhost-user-blk-pci,chardev=c0,num-queues=2', ['--num-queues', '2'], []],
  ['microvm, virtio-mmio', 'vhost-user-blk,chardev=c0,num-queues=1', [], MICROVM],
  ['microvm, virtio-mmio, packed=on', 'vhost-user-blk,chardev=c0,num-queues=1,packed=on', [], MICROVM],
];

for (const [label, device, extra, machine] of BLK_MATRIX) {
  guestTest(`Linux writes a random pattern with O_DIRECT to virtio-ts serve blk and reads it back (${label})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disk-'));
    try {
      const image = join(dir, 'disk.img');
      writeFileSync(image, new Uint8Array(64 << 20));
      const run = await boot('blk', device, ['--image', image, ...extra], machine);
      const written = run.results.get('pattern-md5');
      assert.match(written ?? '', /^[0-9a-f]{32}$/);
      assert.equal(run.results.get('readback-md5'), written, 'the guest read back what it wrote');
      const onHost = createHash('md5').update(readFileSync(image).subarray(0, 64 * 4096)).digest('hex');
      assert.equal(onHost, written, 'the image file holds what the guest wrote (after its sync)');
      noViolations(run);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// QEMU's stop stops the vhost-user rings (SET_STATUS 0, GET_VRING_BASE) and cont starts them
// again from SET_VRING_BASE. Done many times while Linux writes: a ring that restarted from 0,
// or lost a request in progress, shows up as a hung or failed write or a wrong readback.
for (const [label, device] of [
  ['split ring', 'vhost-user-blk-pci,chardev=c0,num-queues=1'],
  ['packed=on', 'vhost-user-blk-pci,chardev=c0,num-queues=1,packed=on'],
] as const) {
  guestTest(`Linux keeps writing to virtio-ts serve blk through QEMU stop/cont, every request served once (${label})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disk-'));
    try {
      const image = join(dir, 'disk.img');
      writeFileSync(image, new Uint8Array(64 << 20));
      let cycles = 0;
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
      const run = await boot('blk', device, ['--image', image], [], async (g) => {
        await g.waitFor(/VT-RESULT stopcont-ready/);
        let finished = false;
        g.waitFor(/VT-RESULT pattern-md5/).then(
          () => (finished = true),
          () => (finished = true),
        );
        while (!finished && cycles < 20) {
          await sleep(40);
          await g.qmp('stop');
          await sleep(40);
          await g.qmp('cont');
          cycles++;
        }
      }, 'stopcont');
      assert.ok(cycles >= 2, `stop/cont happened while the guest wrote (${cycles} cycles)`);
      console.log(`${label}: ${cycles} stop/cont cycles while the guest wrote`);
      assert.equal(run.results.get('write-error'), undefined, 'no write failed');
      const written = run.results.get('pattern-md5');
      assert.match(written ?? '', /^[0-9a-f]{32}$/);
      assert.equal(run.results.get('readback-md5'), written, 'the guest read back what it wrote');
      const pattern = readFileSync(image).subarray(0, 16 * 4096);
      const expected = createHash('md5');
      for (let i = 0; i < 48; i++) expected.update(pattern);
      assert.equal(createHash('md5').update(readFileSync(image).subarray(0, 48 * 16 * 4096)).digest('hex'), expected.digest('hex'), 'the image holds the pattern 48 times');
      assert.equal(createHash('md5').update(readFileSync(image).subarray(0, 48 * 16 * 4096)).digest('hex'), written, 'and it is what the guest wrote');
      const restarts = [...run.serveLog.matchAll(/ring 0 started at available (\d+)/g)].map((m) => Number(m[1]));
      assert.ok(restarts.length >= cycles, `the ring was restarted at each cont (${restarts.length} starts, ${cycles} cycles)`);
      assert.ok(restarts.some((a) => a > 0), 'and resumed past 0');
      noViolations(run);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
