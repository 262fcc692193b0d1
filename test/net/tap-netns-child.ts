// Test support (not a test file): runs INSIDE a network namespace the test made (`unshare -n`),
// so the TAP it attaches and the addresses it sets exist only there and vanish with it. Prints
// one JSON line with what it saw; test/net/tap-port.test.ts asserts on it.
//
//   traffic vnet|plain  NetDriver <-> NetDevice <-> TapFramePort(vt0, with/without virtio_net_hdr);
//                       the kernel (169.254.0.2 on vt0) answers ARP and ICMP; a UDP socket of the
//                       host gets a datagram the driver sent with a partial checksum, and sends one back.
//   errors              the kinds: 'lo' (not a TAP), vt0 twice (in use); vt0 deleted under the port.
//   pps                 frames per second through the TAP (driver -> kernel, and a UDP sender in the
//                       namespace -> driver) for 64- and 1514-byte frames: a figure for the report,
//                       not a test (`unshare -n node dist/test/net/tap-netns-child.js pps`).
//   open                one open attempt of vt0, its error kind (run without CAP_NET_ADMIN or /dev/net/tun).
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Monitor } from '../../src/monitor/monitor.js';
import { LoopbackTransport } from '../../src/transports/loopback/loopback.js';
import { NetDevice } from '../../src/devices/net/device.js';
import { NetDriver } from '../../src/drivers/net.js';
import { connectPorts } from '../../src/net/switch.js';
import { fillChecksum } from '../../src/net/offload.js';
import type { NetOffload } from '../../src/net/frame-port.js';
import { TapFramePort } from '../../src/node/net/tap-port.js';
import { NetPortError } from '../../src/node/net/errors.js';
import { ether, ipFrame, checksumsValid, l4Payload, pattern } from './frames.js';

const MAC_A = Uint8Array.of(0x52, 0x54, 0x00, 0x00, 0x00, 0x0a);
const DRIVER_IP = [169, 254, 0, 1];
const HOST_IP = [169, 254, 0, 2];
const BOUND_MS = 20000;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'inherit'] });
const out = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

function kindOf(fn: () => unknown): string {
  try {
    const r = fn();
    (r as TapFramePort | undefined)?.close?.();
    return 'opened';
  } catch (e) {
    return e instanceof NetPortError ? e.kind : `other: ${String(e)}`;
  }
}

async function waitFor<T>(what: string, get: () => T | undefined): Promise<T> {
  const deadline = Date.now() + BOUND_MS;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function arpRequest(): Uint8Array {
  const p = new Uint8Array(28);
  p.set([0, 1, 8, 0, 6, 4, 0, 1], 0);
  p.set(MAC_A, 8);
  p.set(DRIVER_IP, 14);
  p.set(HOST_IP, 24);
  return ether(Uint8Array.of(255, 255, 255, 255, 255, 255), MAC_A, 0x0806, p);
}

function icmpEcho(dst: Uint8Array, payload: Uint8Array): Uint8Array {
  const ipb = new Uint8Array(20 + 8 + payload.length);
  ipb[0] = 0x45;
  ipb[2] = ipb.length >> 8;
  ipb[3] = ipb.length & 0xff;
  ipb[8] = 64;
  ipb[9] = 1;
  ipb.set(DRIVER_IP, 12);
  ipb.set(HOST_IP, 16);
  fillChecksum(ipb, 0, 10, 20);
  ipb[20] = 8;
  ipb[24] = 0x12;
  ipb[25] = 0x34;
  ipb[27] = 1;
  ipb.set(payload, 28);
  fillChecksum(ipb, 20, 2);
  return ether(dst, MAC_A, 0x0800, ipb);
}

async function traffic(vnetHdr: boolean): Promise<void> {
  const tap = TapFramePort.open('vt0', { vnetHdr });
  ip('addr', 'add', '169.254.0.2/16', 'dev', 'vt0');
  ip('link', 'set', 'vt0', 'up');
  // (not /sys/class/net: sysfs shows the namespace it was mounted in)
  const tapMac = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'vt0'], { encoding: 'utf8' })) as { address: string }[])[0].address;
  // The host reaches the driver without ARP of its own (the driver here has no IP stack).
  ip('neigh', 'replace', DRIVER_IP.join('.'), 'lladdr', '52:54:00:00:00:0a', 'dev', 'vt0', 'nud', 'permanent');
  const devMon = new Monitor({ mode: 'tolerant' });
  const drvMon = new Monitor({ mode: 'tolerant' });
  const device = new NetDevice({ mac: MAC_A, monitor: devMon, queueMaxSize: 256, linkUp: true });
  const transport = new LoopbackTransport(device, GuestMemory.create(32 << 20), { mode: 'sync' });
  const driver = new NetDriver(transport, { monitor: drvMon, queueSize: 256 });
  connectPorts(device.port, tap, { b: (up) => void (up && tap.setReceiveOffloads(device.port.accepts)) });
  await driver.start();
  const got: { frame: Uint8Array; offload: NetOffload | undefined }[] = [];
  driver.onFrame = (f, o) => got.push({ frame: f.slice(), offload: o === undefined ? undefined : structuredClone(o) });
  const take = (pred: (f: Uint8Array) => boolean) => {
    const i = got.findIndex((g) => pred(g.frame));
    return i < 0 ? undefined : got.splice(i, 1)[0];
  };

  // ARP: the kernel answers for its address on vt0.
  driver.send(arpRequest());
  driver.flush();
  const arp = await waitFor('the ARP reply', () => take((f) => f[12] === 8 && f[13] === 6 && f[21] === 2));
  const arpSender = [...arp.frame.subarray(22, 28)].map((b) => b.toString(16).padStart(2, '0')).join(':');
  const arpIp = [...arp.frame.subarray(28, 32)].join('.');
  const hostMac = arp.frame.slice(22, 28);

  // ICMP echo: the reply carries the same payload back.
  const ping = pattern(1000, 7);
  driver.send(icmpEcho(hostMac, ping));
  driver.flush();
  const reply = await waitFor('the ICMP echo reply', () => take((f) => f[12] === 8 && f[13] === 0 && f[23] === 1 && f[34] === 0));
  const icmpSame = Buffer.compare(Buffer.from(reply.frame.subarray(42)), Buffer.from(ping)) === 0;

  // UDP driver -> host socket, with a partial checksum (NEEDS_CSUM): the header passes it to the
  // kernel (vnet) or the port fills it (plain); a wrong one would be dropped by the kernel.
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(8080, HOST_IP.join('.'), r));
  const fromDriver: Buffer[] = [];
  let peer: { address: string; port: number } | undefined;
  sock.on('message', (m, rinfo) => {
    fromDriver.push(m);
    peer = rinfo;
  });
  const data = pattern(1200, 3);
  const { frame, l4 } = ipFrame({ proto: 'udp', payload: data, dst: hostMac, src: MAC_A, partial: true });
  driver.send(frame, { needsCsum: { start: l4, offset: 6 } });
  driver.flush();
  await waitFor('the datagram at the host socket', () => (fromDriver.length > 0 ? true : undefined));
  const udpToHost = Buffer.compare(fromDriver[0], Buffer.from(data)) === 0;

  // UDP host socket -> driver: the payload arrives; its checksum is right once filled (a
  // partial one comes with NEEDS_CSUM when the guest side negotiated GUEST_CSUM).
  const back = pattern(1400, 11);
  sock.send(back, peer!.port, peer!.address);
  const udp = await waitFor('the datagram at the driver', () => take((f) => f[12] === 8 && f[13] === 0 && f[23] === 17));
  const f = udp.frame;
  if (udp.offload?.needsCsum !== undefined) fillChecksum(f, udp.offload.needsCsum.start, udp.offload.needsCsum.offset);
  const udpFromHost = Buffer.compare(Buffer.from(l4Payload(f)), Buffer.from(back)) === 0 && checksumsValid(f);
  sock.close();
  const verdicts = devMon.verdicts.length + drvMon.verdicts.length;
  out({
    tapName: tap.name, vnetHdr: tap.vnetHdr, tapMac, arpSender, arpIp, icmpSame, udpToHost, udpFromHost,
    udpFromHostNeedsCsum: udp.offload?.needsCsum !== undefined, receiveOffloads: tap.receiveOffloads, counters: tap.counters, verdicts,
  });
  driver.close();
  tap.close();
}

async function pps(): Promise<void> {
  const tap = TapFramePort.open('vt0');
  ip('addr', 'add', '169.254.0.2/16', 'dev', 'vt0');
  ip('link', 'set', 'vt0', 'up');
  ip('neigh', 'replace', DRIVER_IP.join('.'), 'lladdr', '52:54:00:00:00:0a', 'dev', 'vt0', 'nud', 'permanent');
  const device = new NetDevice({ mac: MAC_A, monitor: new Monitor({ mode: 'tolerant' }), queueMaxSize: 1024, linkUp: true });
  const transport = new LoopbackTransport(device, GuestMemory.create(64 << 20), { mode: 'sync' });
  const driver = new NetDriver(transport, { monitor: new Monitor({ mode: 'tolerant' }), queueSize: 1024 });
  connectPorts(device.port, tap, { b: (up) => void (up && tap.setReceiveOffloads(device.port.accepts)) });
  await driver.start();
  const res: Record<string, number> = {};
  for (const size of [64, 1514]) {
    // Driver -> kernel: to a MAC nobody has, so the kernel drops it at once (the cost is the TAP's).
    const { frame } = ipFrame({ proto: 'udp', payload: new Uint8Array(size - 42), dst: Uint8Array.of(2, 0, 0, 0, 0, 0x99), src: MAC_A });
    const n = 200_000;
    const before = tap.counters.txFrames;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; ) {
      if (driver.send(frame)) i++;
      else {
        driver.flush();
        await new Promise((r) => setImmediate(r));
      }
    }
    driver.flush();
    await waitFor('the last frames written', () => (tap.counters.txFrames - before + tap.counters.dropped >= n ? true : undefined));
    res[`tx${size}`] = Math.round(((tap.counters.txFrames - before) * 1e9) / Number(process.hrtime.bigint() - t0));
    // Kernel -> driver: a UDP sender in this namespace (another process) blasts for 2 s.
    let got = 0;
    driver.onFrame = () => void got++;
    const sender = `const s=require('dgram').createSocket('udp4');s.bind(0,'169.254.0.2',()=>{const b=Buffer.alloc(${size - 42});let n=0;const end=Date.now()+2000;const go=()=>{for(let i=0;i<256;i++)s.send(b,9,'169.254.0.1');n+=256;if(Date.now()<end)setImmediate(go);else s.close(()=>console.log(n));};go();});`;
    const t1 = process.hrtime.bigint();
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, ['-e', sender], { stdio: ['ignore', 'pipe', 'inherit'] });
    let sent = '';
    child.stdout.on('data', (d) => (sent += d));
    await new Promise((r) => child.once('exit', r));
    res[`rx${size}`] = Math.round((got * 1e9) / Number(process.hrtime.bigint() - t1));
    res[`rx${size}Sent`] = Number(sent.trim());
    res[`rx${size}Got`] = got;
    driver.onFrame = null;
  }
  out({ ...res, counters: tap.counters, device: device.counters });
  driver.close();
  tap.close();
}

async function errors(): Promise<void> {
  const lo = kindOf(() => TapFramePort.open('lo'));
  const held = TapFramePort.open('vt0');
  const twice = kindOf(() => TapFramePort.open('vt0'));
  const badName = kindOf(() => TapFramePort.open('a/b'));
  const tooLong = kindOf(() => TapFramePort.open('x'.repeat(16)));
  // The interface deleted under the port: the link goes down, nothing throws.
  const downs: boolean[] = [];
  held.onLinkChange = (up) => downs.push(up);
  ip('link', 'set', 'vt0', 'up');
  ip('link', 'del', 'vt0');
  await waitFor('link down after ip link del', () => (downs.length > 0 ? true : undefined));
  const sentAfter = held.send(new Uint8Array(60));
  held.close();
  out({ lo, twice, badName, tooLong, downs, linkUp: held.linkUp, sentAfter, endReason: held.endReason });
}

const [mode, arg] = process.argv.slice(2);
const run = mode === 'traffic' ? traffic(arg === 'vnet') : mode === 'errors' ? errors() : mode === 'pps' ? pps() : Promise.resolve(out({ kind: kindOf(() => TapFramePort.open('vt0')) }));
run.then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`tap-netns-child: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
