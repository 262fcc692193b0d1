// vsock end to end with a real Linux guest (QEMU 7.2 vhost-user-vsock-pci, guest memory a shared
// memfd): the guest runs scripts/guest/init's `vsock` case with vsock-tool (scripts/guest/
// vsock-tool.c, static, in the initramfs); the host side is hybrid vsock unix sockets.
// One boot, several checks (each a few seconds under TCG):
// - data both ways, guest-initiated (PREFIX_1000) and host-initiated (CONNECT 1001), by md5;
// - 100 concurrent connections (an echo listener on PREFIX_1002);
// - a guest that stops reading: the host writes until the credit holds it; the back-end holds
//   at most its per-connection mark, and sent exactly the guest's advertised buffer;
// - a host peer that vanishes: the guest's writes fail (RST), and a connection to a port
//   nothing listens on is reset (ECONNRESET);
// and once more through `virtio-ts serve vsock` (the command line), data both ways by md5.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { boot, guestTest, noViolations } from '../guest/harness.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { VsockDevice } from '../../src/devices/vsock/device.js';
import { serveVhostUser } from '../../src/transports/vhost-user/daemon.js';
import { serveHybridVsock, type HybridVsock } from '../../src/node/vsock/hybrid.js';
import { until } from '../wait.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
const DEVICE = 'vhost-user-vsock-pci,chardev=c0';

/** A unix listener at `path`; each connection to `onConnection`. */
async function unixListen(path: string, onConnection: (s: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, onConnection);
  await new Promise<void>((res) => server.listen(path, res));
  return server;
}

/** Everything a socket gives until its end. */
function collect(s: Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  return new Promise((res, rej) => {
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => res(Buffer.concat(parts)));
    s.on('error', rej);
  });
}

/** A host program: connects to the hybrid socket, CONNECT port, waits for OK <hostport>. */
async function hybridConnect(uds: string, port: number): Promise<{ sock: Socket; hostPort: number; rest: Buffer }> {
  const sock = createConnection({ path: uds, allowHalfOpen: true });
  await once(sock, 'connect');
  sock.write(`CONNECT ${port}\n`);
  let got = Buffer.alloc(0);
  while (!got.includes(0x0a)) {
    const [d] = (await once(sock, 'data')) as [Buffer];
    got = Buffer.concat([got, d]);
  }
  sock.pause();
  const nl = got.indexOf(0x0a);
  const m = /^OK (\d+)$/.exec(got.subarray(0, nl).toString('latin1'));
  assert.ok(m, `OK line, got ${JSON.stringify(got.subarray(0, 80).toString('latin1'))}`);
  // The guest may send at once: what came with the OK line is the stream's first bytes.
  return { sock, hostPort: Number(m[1]), rest: got.subarray(nl + 1) };
}

guestTest('vsock guest (in-process back-end, hybrid vsock): md5 both ways, 100 connections, a stalled reader bounds the back-end, a vanished host peer resets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-vsock-'));
  const uds = join(dir, 'v');
  const monitor = new Monitor({ ignore: ['reserved.bits.driver.6'] });
  const txHighWater = 64 * 1024;
  const device = new VsockDevice({ guestCid: 3, monitor, txHighWater });
  let hybrid: HybridVsock | null = null;
  const servers: Server[] = [];
  const down = randomBytes(4 << 20);
  const fromGuest: Promise<Buffer>[] = [];
  const h2g = randomBytes(1 << 20);
  let g2hMd5 = '';
  type Stall = { sent: number; peerBufAlloc: number; buffered: number; hostWrote: number; rssBefore: number; rssAfter: number };
  const stalls: Stall[] = [];
  let vanishAccepted = 0;
  try {
    servers.push(
      await unixListen(`${uds}_1000`, (s) => {
        fromGuest.push(collect(s));
        s.end(down);
      }),
      await unixListen(`${uds}_1002`, (s) => s.pipe(s)),
      await unixListen(`${uds}_1005`, (s) => {
        vanishAccepted++;
        s.once('data', () => s.destroy()); // the host peer vanishes mid-stream
      }),
    );
    const run = await boot({
      kind: 'vsock',
      device: DEVICE,
      serveArgs: [],
      timeoutMs: 120_000,
      server: (sock) => {
        const daemon = serveVhostUser(device, { socket: sock });
        const h = serveHybridVsock(device, { udsPath: uds }).then((x) => (hybrid = x));
        return { close: async () => Promise.all([daemon.close(), h.then((x) => x.close())]) };
      },
      during: async (g) => {
        // 2. Host-initiated.
        await g.waitFor(/VT-RESULT listening-1001/);
        const c = await hybridConnect(uds, 1001);
        const got = collect(c.sock);
        c.sock.resume();
        c.sock.end(h2g);
        g2hMd5 = md5(Buffer.concat([c.rest, await got]));
        // 4. The stalled reader.
        await g.waitFor(/VT-RESULT listening-1003/);
        const rssBefore = process.memoryUsage().rss;
        const s = await hybridConnect(uds, 1003);
        const chunk = Buffer.alloc(64 * 1024, 0x5a);
        let hostWrote = 0;
        let stop = false;
        s.sock.on('error', () => undefined);
        const writer = (async () => {
          while (!stop) {
            hostWrote += chunk.length;
            if (!s.sock.write(chunk)) await Promise.race([once(s.sock, 'drain'), once(s.sock, 'close')]);
          }
        })();
        const conn = () => device.engine.connections().find((x) => x.localPort === s.hostPort);
        // Held: the guest's whole buffer is used (it never reads: fwd_cnt stays 0) and the
        // back-end's queue for this flow is at its mark, so the unix socket is paused.
        await until(() => conn() !== undefined && conn()!.peerFree === 0 && conn()!.txBuffered >= txHighWater / 2, 'the guest credit used and the host queue full');
        const c3 = conn()!;
        stalls.push({ sent: c3.txCnt, peerBufAlloc: c3.peerBufAlloc, buffered: device.engine.bufferedBytes, hostWrote, rssBefore, rssAfter: process.memoryUsage().rss });
        stop = true;
        s.sock.destroy();
        await writer;
        // Tell the guest we are done (it waits on port 1004).
        const done = await hybridConnect(uds, 1004);
        done.sock.end();
        await once(done.sock, 'close');
      },
    });
    const r = run.results;
    assert.equal(r.get('down-md5'), md5(down), 'host -> guest, guest-initiated');
    assert.equal(fromGuest.length, 1);
    assert.equal(md5(await fromGuest[0]), r.get('up-md5'), 'guest -> host, guest-initiated');
    assert.equal(r.get('h2g-md5'), md5(h2g), 'host -> guest, host-initiated');
    assert.equal(g2hMd5, r.get('up1-md5'), 'guest -> host, host-initiated');
    assert.equal(r.get('multi'), 'MULTI-OK 100');
    assert.equal(stalls.length, 1);
    const st = stalls[0];
    // The credit logic: the back-end sent exactly what the guest advertised, no more; what it
    // holds is its own bounded queue, while the host program wrote far more.
    assert.equal(st.sent, st.peerBufAlloc, `sent ${st.sent} = the guest's buf_alloc ${st.peerBufAlloc}`);
    assert.ok(st.buffered <= txHighWater + chunkBound, `back-end buffered ${st.buffered} <= ${txHighWater} + ${chunkBound}`);
    assert.ok(st.hostWrote > st.sent + st.buffered, `the host program wrote ${st.hostWrote} bytes`);
    console.log(`stalled reader: host wrote ${st.hostWrote} B, sent to the guest ${st.sent} B (its buf_alloc), back-end held ${st.buffered} B; RSS ${(st.rssBefore / 2 ** 20).toFixed(1)} -> ${(st.rssAfter / 2 ** 20).toFixed(1)} MiB`);
    assert.equal(vanishAccepted, 1);
    assert.match(r.get('flood') ?? '', /^VT-ERR write (ECONNRESET|EPIPE|ENOTCONN)$/, 'the guest sees the reset of a vanished host peer');
    assert.equal(r.get('refused'), 'VT-ERR connect ECONNRESET');
    assert.deepEqual(monitor.verdicts.filter((v) => v.severity === 'violation'), []);
    assert.ok(hybrid !== null);
  } finally {
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A socket's chunk can land in the queue whole after the mark was crossed. */
const chunkBound = 64 * 1024;

guestTest('vsock guest through `virtio-ts serve vsock --guest-cid 3 --uds-path PREFIX`: md5 both ways, guest-initiated to PREFIX_1000', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-vsock-'));
  const uds = join(dir, 'v');
  const down = randomBytes(4 << 20);
  const fromGuest: Promise<Buffer>[] = [];
  const server = await unixListen(`${uds}_1000`, (s) => {
    fromGuest.push(collect(s));
    s.end(down);
  });
  try {
    const run = await boot({ kind: 'vsock', device: DEVICE, serveArgs: ['--guest-cid', '3', '--uds-path', uds, '--log-format', 'json'], append: 'vt.vsock=quick', timeoutMs: 120_000 });
    assert.equal(run.results.get('down-md5'), md5(down));
    assert.equal(fromGuest.length, 1);
    assert.equal(md5(await fromGuest[0]), run.results.get('up-md5'));
    assert.match(run.serveLog, /hybrid vsock: guest CID 3/);
    assert.match(run.serveLog, /guest port \d+ connected to /);
    noViolations(run);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
