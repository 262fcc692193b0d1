// The exit-code contract of every command (0 ok, 1 violations, 2 usage, 3 runtime failure),
// strict flag values, quiet ends on closed pipes, the addon missing, and what `serve` says at
// start and stop, in JSON and in the human-readable format. The real binary throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Feature } from '../../src/spec/constants.js';
import { bit } from '../../src/spec/features.js';
import { HEADER_SIZE, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_VIOLATIONS } from '../../src/cli/exit-codes.js';
import { defaultLogFormat } from '../../src/cli/log.js';
import { TestFrontEnd, message, n, receive } from '../vhost-user/front-end.js';
import { bin, root, run, startServe, until, frontEndOver } from './helpers.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'virtio-ts-exit-'));
}

test('usage errors exit 2 in every command: wrong flags, unknown clause ids, bad values (numbers parsed strictly)', () => {
  const dir = tempDir();
  try {
    const image = join(dir, 'disk.img');
    writeFileSync(image, new Uint8Array(64 << 10));
    const sock = join(dir, 'x.sock');
    const blk = ['serve', 'blk', '--socket-path', sock, '--image', image];
    const cases: [string[], RegExp][] = [
      [['demo', '--misbehave', 'no.such.clause.1'], /not a clause id/],
      [['demo', '--bytes', '12abc'], /--bytes must be a whole number from 1 to 16777216 \(got "12abc"\)/],
      [['demo', '--bytes', '0x10'], /whole number/],
      [['demo', '--bytes', '1e3'], /whole number/],
      [['demo', '--bytes', '0'], /whole number/],
      [['demo', '--frobnicate'], /unknown option/],
      [['conformance', '--status', 'great'], /unknown status/],
      [['conformance', '--part', 'gpu'], /unknown part/],
      [['serve', 'gpu', '--socket-path', sock], /unknown device type "gpu"/],
      [[...blk, '--queue-size', '3'], /--queue-size must be a power of two from 2 to 32768 \(got 3\)/],
      [[...blk, '--queue-size', '1000'], /power of two/],
      [[...blk, '--queue-size', '1'], /--queue-size must be a whole number from 2 to 32768/],
      [[...blk, '--queue-size', '65536'], /from 2 to 32768/],
      [[...blk, '--queue-size', '128k'], /whole number/],
      [[...blk, '--num-queues', '0'], /--num-queues must be a whole number from 1 to 256/],
      [[...blk, '--num-queues', '257'], /from 1 to 256/],
      [[...blk, '--num-queues', '12abc'], /\(got "12abc"\)/],
      [[...blk, '--num-queues', '1.5'], /whole number/],
      [[...blk, '--num-queues', ' 2'], /whole number/],
      [[...blk, '--format', 'qcow2'], /Allowed choices are raw/],
      [[...blk, '--log-format', 'xml'], /Allowed choices are json, pretty/],
      [[...blk, '--io', 'fast'], /Allowed choices/],
      [['serve', 'rng', '--fd', '12abc'], /--fd must be a whole number/],
      [['serve', 'rng', '--fd', '-1'], /unknown option|whole number/],
      [['serve', 'rng'], /give exactly one of --socket-path PATH or --fd N/],
      [['serve', 'rng', '--socket-path', sock, '--fd', '3'], /give exactly one/],
      [['serve', 'blk', '--socket-path', sock], /serve blk needs --image FILE/],
      [['serve', 'blk', '--socket-path', sock, '--image', image, '--blk-file', '/other.img'], /name the same thing/],
      [['serve', 'rng', '--socket-path', sock, '--image', image], /--image is for blk/],
      [['serve', 'rng', '--socket-path', `${dir}/${'a'.repeat(120)}.sock`], /--socket-path must be 1 to 107 bytes long/],
      [['serve', 'rng', '--socket-path', ''], /--socket-path must be 1 to 107 bytes long/],
      [['serve', 'rng', '--fd', '3', '--tolerant', '--strict'], /'--strict' cannot be used with option '--tolerant'/],
    ];
    for (const [args, message] of cases) {
      const r = run(...args);
      assert.equal(r.code, EXIT_USAGE, `${args.join(' ')} -> ${r.code}: ${r.err}`);
      assert.match(r.err, message, args.join(' '));
      assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
      assert.equal(existsSync(sock), false, 'nothing made');
    }
    const help = run('--help');
    assert.equal(help.code, EXIT_OK);
    assert.match(help.out, /Exit codes \(all commands\):\n  0 +ok\n  1 +violations found.*\n  2 +usage error.*\n  3 +runtime failure/);
    assert.match(run('serve', '--help').out, /Exit codes \(all commands\)/);
    // The edges that are right are accepted: the flags parse and the command goes on to its
    // first runtime check (here: --fd 999 is not open), not a usage error.
    const accepted = (...flags: string[]) => run('serve', 'blk', '--fd', '999', '--image', image, ...flags);
    for (const size of ['2', '128', '1024', '32768']) assert.equal(accepted('--queue-size', size).code, EXIT_RUNTIME, size);
    for (const q of ['1', '256']) assert.equal(accepted('--num-queues', q).code, EXIT_RUNTIME, q);
    assert.match(accepted('--queue-size', '2').err, /--fd 999: not an open file descriptor/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('runtime failures exit 3 with one clear line: image missing, socket directory missing, --fd not a socket or not open', () => {
  const dir = tempDir();
  try {
    const cases: [string[], RegExp][] = [
      [['serve', 'blk', '--socket-path', join(dir, 'x.sock'), '--image', join(dir, 'none.img')], /^virtio-ts serve: cannot use --image .*none\.img: no such file or directory \(ENOENT\)\n$/],
      [['serve', 'rng', '--socket-path', join(dir, 'no-dir', 'x.sock')], /^virtio-ts serve: cannot listen on --socket-path .*: no such file or directory \(ENOENT\)\n$/],
      [['serve', 'rng', '--fd', '999'], /^virtio-ts serve: --fd 999: not an open file descriptor\n$/],
    ];
    for (const [args, message] of cases) {
      const r = run(...args);
      assert.equal(r.code, EXIT_RUNTIME, `${args.join(' ')} -> ${r.code}: ${r.err}`);
      assert.match(r.err, message);
    }
    // stdin /dev/null as --fd 0 (node gives a child socketpairs for 'pipe', so not those).
    const r = spawnSync(process.execPath, [bin, 'serve', 'rng', '--fd', '0'], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal(r.status, EXIT_RUNTIME);
    assert.match(r.stderr, /^virtio-ts serve: --fd 0 is not a socket \(vhost-user needs a connected unix socket\)\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--print-capabilities: the vhost-user.json capabilities; block lists read-only and blk-file, and --blk-file serves like --image', async () => {
  const caps = run('serve', 'blk', '--print-capabilities');
  assert.equal(caps.code, EXIT_OK);
  assert.deepEqual(JSON.parse(caps.out), { type: 'block', features: ['read-only', 'blk-file'] });
  assert.deepEqual(JSON.parse(run('serve', 'rng', '--print-capabilities').out), { type: 'rng', features: [] });
  // vhost-user.rst: other options and arguments are ignored.
  const ignoring = run('serve', 'blk', '--queue-size', '3', '--print-capabilities', '--no-such-flag');
  assert.equal(ignoring.code, EXIT_OK, ignoring.err);
  assert.deepEqual(JSON.parse(ignoring.out), { type: 'block', features: ['read-only', 'blk-file'] });
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  writeFileSync(image, new Uint8Array(1 << 20));
  const s = startServe(['serve', 'blk', '--socket-path', join(dir, 'blk.sock'), '--blk-file', image, '--read-only']);
  try {
    const start = await s.logged(/^serving /);
    assert.deepEqual([start.image, start.capacitySectors, start.readOnly], [image, 2048, true]);
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, EXIT_OK);
  } finally {
    s.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Runs `virtio-ts <args>` with stdout a real pipe whose reader has already gone: the command
 * starts only once the reader closed its end (a file it touches says so), so every write meets
 * EPIPE. Returns the command's exit code and its stderr.
 */
function intoClosedPipe(args: string[], stderrToo = false): { code: number; err: string } {
  const dir = tempDir();
  try {
    const closed = join(dir, 'closed');
    const cmd = [process.execPath, bin, ...args].map((a) => `'${a}'`).join(' ');
    const script = `
      { for i in $(seq 1000); do [ -e '${closed}' ] && break; sleep 0.01; done; ${cmd} ${stderrToo ? '2>&1' : `2>'${dir}/err'`}; echo $? >'${dir}/code'; } | { exec 0<&-; touch '${closed}'; }
      cat '${dir}/code'`;
    const r = spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    return { code: Number(r.stdout.trim()), err: stderrToo ? '' : spawnSync('cat', [join(dir, 'err')], { encoding: 'utf8' }).stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('output into a pipe that closed early ends quietly with the command\'s own exit code (no EPIPE stack trace)', () => {
  for (const args of [['conformance'], ['conformance', '--list'], ['conformance', '--json'], ['demo'], ['demo', '--json'], ['demo', '--list-misbehaviours'], ['serve', 'blk', '--print-capabilities']]) {
    const r = intoClosedPipe(args);
    assert.equal(r.err, '', `${args.join(' ')}: nothing on stderr`);
    assert.equal(r.code, EXIT_OK, args.join(' '));
  }
  // demo --misbehave keeps its meaning (0: the oracle named the clause) with nobody reading.
  assert.equal(intoClosedPipe(['demo', '--misbehave', 'split.avail-ring.driver.1']).code, EXIT_OK);
  // stderr into the closed pipe too: a usage error still exits 2, a runtime failure 3 (not a crash).
  assert.equal(intoClosedPipe(['demo', '--bytes', 'x'], true).code, EXIT_USAGE);
  assert.equal(intoClosedPipe(['serve', 'rng', '--fd', '999'], true).code, EXIT_RUNTIME);
  // The way a user meets it: `| head -1` (conformance --list writes far more than a pipe holds).
  for (const cmd of ['conformance --list', 'conformance', 'demo']) {
    const r = spawnSync('bash', ['-c', `'${process.execPath}' '${bin}' ${cmd} | head -1; exit \${PIPESTATUS[0]}`], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, EXIT_OK, `${cmd} | head -1: ${r.stderr}`);
    assert.equal(r.stderr, '', `${cmd} | head -1: nothing on stderr`);
    assert.equal(r.stdout.split('\n').filter(Boolean).length, 1);
  }
});

test('without the native addon: demo and conformance work, serve says why it cannot run and how to build it (exit 3)', () => {
  const dir = tempDir();
  try {
    // The package as installed with `npm install --ignore-scripts`: dist and node_modules, no build/.
    cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(root, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    const copy = join(dir, 'dist/src/cli/main.js');
    const go = (...a: string[]) => spawnSync(process.execPath, [copy, ...a], { encoding: 'utf8', timeout: 60_000 });
    const demo = go('demo');
    assert.equal(demo.status, EXIT_OK, demo.stderr);
    assert.match(demo.stdout, /read 4096 random bytes/);
    assert.equal(go('conformance').status, EXIT_OK);
    assert.equal(go('serve', 'blk', '--print-capabilities').status, EXIT_OK, 'capabilities need no addon');
    for (const args of [['serve', 'rng', '--socket-path', join(dir, 'r.sock')], ['serve', 'blk', '--socket-path', join(dir, 'b.sock'), '--image', join(dir, 'package.json')]]) {
      const r = go(...args);
      assert.equal(r.status, EXIT_RUNTIME, r.stderr);
      assert.match(r.stderr, /serve needs the native addon .*: the virtio-ts native addon is not available/);
      assert.match(r.stderr, /install a C compiler, make and python3, then run `npm rebuild virtio-ts`/);
      assert.match(r.stderr, /demo and conformance work without it/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(existsSync(args[3]), false, 'no socket made');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('serve logs a startup line (image, capacity in bytes and sectors, queues, queue size, seg_max, read-only, io, mode) and a shutdown line with the signal', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  writeFileSync(image, new Uint8Array(3 << 20));
  try {
    for (const [signal, extra] of [['SIGTERM', []], ['SIGINT', ['--num-queues', '2', '--queue-size', '256', '--io', 'sync', '--read-only', '--strict']]] as const) {
      const sock = join(dir, 'blk.sock');
      const s = startServe(['serve', 'blk', '--socket-path', sock, '--image', image, ...extra]);
      try {
        const start = await s.logged(/^serving /);
        const strict = extra.length > 0;
        assert.equal(start.level, 30);
        assert.deepEqual(
          { image: start.image, capacityBytes: start.capacityBytes, capacitySectors: start.capacitySectors, numQueues: start.numQueues, queueSize: start.queueSize, segMax: start.segMax, readOnly: start.readOnly, io: start.io, mode: start.mode },
          { image, capacityBytes: 3 << 20, capacitySectors: 6144, numQueues: strict ? 2 : 1, queueSize: strict ? 256 : 1024, segMax: 126, readOnly: strict, io: strict ? 'sync' : 'auto', mode: strict ? 'strict' : 'tolerant' },
        );
        assert.match(start.msg, strict ? /6144 sectors of 512 bytes \(3145728 bytes\), 2 queues of up to 256, seg_max 126, read-only, io sync, monitor strict, on / : /1 queue of up to 1024, seg_max 126, read-write, io auto, monitor tolerant/);
        await s.logged(/^listening on/);
        s.child.kill(signal);
        assert.equal(await s.exited, EXIT_OK);
        const stop = s.logs().find((l) => l.event === 'stop')!;
        assert.deepEqual([stop.signal, stop.violations, stop.exitCode, stop.socketFile], [signal, 0, 0, 'removed']);
        assert.match(stop.msg, new RegExp(`^${signal}: shutting down; monitor verdicts in this run: 0 violations, 0 warnings; exit 0; socket removed$`));
      } finally {
        s.child.kill('SIGKILL');
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const mode of ['default (tolerant)', '--strict'] as const) {
  test(`serve ${mode}: a violation by the guest driver is logged with its clause, and SIGTERM then exits 1`, async () => {
    const dir = tempDir();
    const path = join(dir, 'rng.sock');
    const s = startServe(['serve', 'rng', '--socket-path', path, ...(mode === '--strict' ? ['--strict'] : [])]);
    let fe: TestFrontEnd | null = null;
    try {
      const start = await s.logged(/^serving rng/);
      assert.equal(start.mode, mode === '--strict' ? 'strict' : 'tolerant');
      await s.logged(/^listening on/); // not the file: it appears at bind(), before listen()
      fe = frontEndOver(path);
      fe.send(Req.SET_OWNER);
      fe.send(Req.SET_FEATURES, u64Payload(bit(Feature.VERSION_1))); // split ring
      fe.sendMemTable();
      const ring = fe.setRing(0, 'split', 16, 0x1000, 0, { eventIdx: false });
      // entropy.device-operation.driver.1: the driver MUST NOT place driver-readable buffers in the queue.
      ring.queue.begin().addReadable(0x20000, 64).commit('bad');
      ring.queue.publish();
      n.eventfdWrite(ring.kick, 1);
      const verdict = await s.logged(/entropy\.device-operation\.driver\.1/);
      assert.equal(verdict.level, 40);
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, EXIT_VIOLATIONS);
      const stop = s.logs().find((l) => l.event === 'stop')!;
      assert.equal(stop.exitCode, EXIT_VIOLATIONS);
      assert.ok((stop.violations as number) >= 1);
      assert.match(stop.msg, /^SIGTERM: shutting down; monitor verdicts in this run: \d+ violations?, \d+ warnings?; exit 1; socket removed$/);
    } finally {
      fe?.close();
      s.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('--log-format pretty: human-readable lines (time, level, message), no JSON; the default is pretty on a terminal, JSON otherwise', async () => {
  assert.equal(defaultLogFormat(true), 'pretty');
  assert.equal(defaultLogFormat(false), 'json');
  const dir = tempDir();
  const path = join(dir, 'rng.sock');
  const s = startServe(['serve', 'rng', '--socket-path', path, '--log-format', 'pretty']);
  try {
    await until(() => /listening on/.test(s.stderr()), 'the listening line');
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, EXIT_OK);
    const lines = s.stderr().trim().split('\n');
    for (const l of lines) assert.match(l, /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR): \S/, l);
    assert.ok(lines.some((l) => /INFO: serving rng: 1 queue of up to 1024, monitor tolerant, on /.test(l)));
    assert.ok(lines.some((l) => /INFO: SIGTERM: shutting down; monitor verdicts in this run: 0 violations, 0 warnings; exit 0; socket removed$/.test(l)));
    assert.ok(!lines.some((l) => l.startsWith('{')), 'no JSON');
  } finally {
    s.child.kill('SIGKILL');
  }
  // On a terminal (script(1) gives the server a pty for stderr) the default is the pretty format, coloured.
  const have = spawnSync('script', ['--version'], { encoding: 'utf8' });
  if (have.status === 0) {
    const cmd = `'${process.execPath}' '${bin}' serve rng --socket-path '${path}' & echo "PID=$!"; wait $!`;
    const tty = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    tty.stdout.on('data', (d) => (out += d));
    const done = new Promise((res) => tty.on('exit', res));
    try {
      await until(() => /listening on/.test(out), `the listening line on the terminal (so far: ${out})`);
      process.kill(Number(/PID=(\d+)/.exec(out)![1]), 'SIGTERM');
      await done;
      assert.match(out, /INFO.*: .*serving rng/);
      assert.match(out, /\x1b\[3\dm/, 'coloured');
      assert.doesNotMatch(out, /"level":/, 'not JSON');
    } finally {
      tty.kill('SIGKILL');
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

test('serve --fd: serves an inherited connected socket; when the front-end leaves it logs why and exits (0: no violation)', async () => {
  const [front, back] = n.socketpair();
  const child = spawn(process.execPath, [bin, 'serve', 'rng', '--fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', back] });
  n.close(back); // the child has its own copy
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  try {
    n.sendmsg(front, message(Req.GET_FEATURES));
    const features = new DataView((await receive(front, 30_000)).buffer).getBigUint64(HEADER_SIZE, true);
    assert.ok(features & bit(Feature.VERSION_1));
    n.close(front);
    assert.equal(await exited, EXIT_OK);
    const lines = stderr.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; event?: string; fd?: number; reason?: string });
    assert.equal(lines[0].event, 'start');
    assert.equal(lines[0].fd, 3);
    assert.match(lines[0].msg, /on fd 3$/);
    const stop = lines.find((l) => l.event === 'stop')!;
    assert.match(stop.reason!, /front-end gone: front-end closed the connection/);
  } finally {
    child.kill('SIGKILL');
  }
});
