/**
 * A Linux TAP interface as a frame port (issue 15): `virtio-ts serve net --tap IFNAME`, or any
 * FramePort user (a NetSwitch, a NetDriver in Node) that wants the host kernel's network stack on
 * the other end of the link.
 *
 * The TAP is attached by name through /dev/net/tun (native/tap.c: TUNSETIFF with IFF_TAP |
 * IFF_NO_PI): made if no interface has that name (it then disappears when the port closes), or an
 * existing persistent TAP (`ip tuntap add NAME mode tap`) nobody holds. Any other interface of
 * that name (a real NIC, a bridge, a TUN) is refused by the kernel (EINVAL, kind `not-a-tap`)
 * and never touched. The port does not configure the interface: addresses, up/down, bridges and
 * routes are the user's (`ip addr add ... dev NAME && ip link set NAME up`); while it is down the
 * kernel refuses frames written to it (counted in `droppedDown`).
 *
 * Offloads: with `vnetHdr` (the default on little-endian hosts) every frame crosses the fd with a
 * virtio_net_hdr in front (IFF_VNET_HDR, TUNSETVNETHDRSZ 12), so checksum and GSO metadata pass
 * to the kernel as they are (`accepts` is every offload: the kernel finishes them) and, once
 * {@link TapFramePort.setReceiveOffloads} says what the other side takes (TUNSETOFFLOAD), come
 * from it the same way. Without it, frames are whole both ways: the port completes what it is
 * handed in software (src/net/offload.ts) as the switch path does.
 *
 * Reads are non-blocking, woken by the addon's fd watch on this thread's loop; nothing is
 * allocated per frame (one receive buffer, one header buffer, reused offload records).
 */
import { native, POLL_DISCONNECT, type NativeAddon } from '../../native/index.js';
import { errnoOf } from '../../native/errno.js';
import type { FramePort, NetOffload, OffloadSupport } from '../../net/frame-port.js';
import { ALL_OFFLOADS, NO_OFFLOADS } from '../../net/frame-port.js';
import { completeOffloads, MAX_GSO_FRAME } from '../../net/offload.js';
import { NET_HDR, NET_HDR_F, NET_HDR_GSO } from '../../spec/net.js';
import { NetPortError } from './errors.js';

/** The virtio_net_hdr size on the TAP fd: the 12-byte layout (num_buffers is unused by TAP). */
export const TAP_VNET_HDR_BYTES = 12;

/** linux/if_tun.h TUN_F_* bits for TUNSETOFFLOAD. */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, UFO: 0x10, USO4: 0x20, USO6: 0x40 } as const;

/** Frames read per wake-up before the loop gets a turn (the watch is level-triggered: it wakes again). */
const READ_BUDGET = 256;

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** Options of {@link TapFramePort.open}. */
export interface TapPortOptions {
  /**
   * Frames cross the fd with a virtio_net_hdr (IFF_VNET_HDR): offloads pass through. Default:
   * true on little-endian hosts (the kernel's header is in the host's order unless told
   * otherwise, and this port reads it little-endian), false elsewhere.
   */
  vnetHdr?: boolean;
}

/** What a TAP port counted. */
export interface TapPortCounters {
  /** Frames read from the kernel and handed to onFrame. */
  rxFrames: number;
  /** Frames written to the kernel. */
  txFrames: number;
  /** Frames the kernel would not take now (EAGAIN, ENOBUFS) or refused (EINVAL: a header it rejects). */
  dropped: number;
  /** Frames refused because the interface is down (EIO: `ip link set NAME up` not done yet). */
  droppedDown: number;
  /** Frames read whose virtio_net_hdr did not describe the frame (dropped). */
  malformed: number;
}

/** Why `name` cannot be an interface name (the kernel's dev_valid_name), or undefined when it can. */
export function interfaceNameProblem(name: string): string | undefined {
  const bytes = Buffer.byteLength(name);
  // 1 to IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or white space.
  if (bytes < 1 || bytes > 15 || name === '.' || name === '..' || /[/:\s]/.test(name) || name.includes('\0')) {
    return `"${name}" is not an interface name (1 to 15 bytes, no '/', ':' or white space, not '.' or '..')`;
  }
  return undefined;
}

function checkName(name: string): void {
  const problem = interfaceNameProblem(name);
  if (problem !== undefined) throw new NetPortError('bad-name', problem);
}

/** One TAP interface as a frame port. */
export class TapFramePort implements FramePort {
  readonly accepts: OffloadSupport;
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null = null;
  onLinkChange: ((up: boolean) => void) | null = null;
  readonly counters: TapPortCounters = { rxFrames: 0, txFrames: 0, dropped: 0, droppedDown: 0, malformed: 0 };
  /** Why the port went down ('' while up). */
  endReason = '';
  private up = true;
  private closed = false;
  private rxOffloads: OffloadSupport = NO_OFFLOADS;
  private readonly hdrLen: number;
  private readonly rx: Uint8Array;
  private readonly rxView: DataView;
  private readonly txHdr = new Uint8Array(TAP_VNET_HDR_BYTES);
  private readonly txView = new DataView(this.txHdr.buffer);
  private readonly rxOffload: NetOffload = {};
  private readonly rxCsum = { start: 0, offset: 0 };
  private readonly rxGso: NonNullable<NetOffload['gso']> = { type: 'tcpv4', segmentSize: 0, headerLength: 0, ecn: false };
  private readonly watch: { close(): void };
  private allWritten = true;
  private readonly emitOne = (f: Uint8Array, o: NetOffload | undefined) => void (this.write(f, o) || (this.allWritten = false));

  private constructor(
    private readonly n: NativeAddon,
    /** The fd on /dev/net/tun (non-blocking). */
    readonly fd: number,
    /** The interface's name as the kernel has it. */
    readonly name: string,
    /** Whether frames cross the fd with a virtio_net_hdr. */
    readonly vnetHdr: boolean,
  ) {
    this.hdrLen = vnetHdr ? TAP_VNET_HDR_BYTES : 0;
    this.accepts = vnetHdr ? ALL_OFFLOADS : NO_OFFLOADS;
    this.rx = new Uint8Array(this.hdrLen + MAX_GSO_FRAME);
    this.rxView = new DataView(this.rx.buffer);
    this.watch = n.watch(fd, true, false, (events) => this.readable(events));
  }

  /**
   * Attaches to the TAP interface `name` (made if it does not exist). Throws a NetPortError:
   * `bad-name`, `tun-missing`, `permission-denied`, `name-in-use`, `not-a-tap`, `open-failed`
   * (and a NativeAddonError when the addon is not available).
   */
  static open(name: string, options: TapPortOptions = {}): TapFramePort {
    checkName(name);
    const n = native();
    const vnetHdr = options.vnetHdr ?? LITTLE_ENDIAN;
    let opened: { fd: number; name: string };
    try {
      opened = n.tapOpen(name, vnetHdr ? TAP_VNET_HDR_BYTES : 0);
    } catch (err) {
      const code = errnoOf(err);
      const why = err instanceof Error ? err.message : String(err);
      if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') throw new NetPortError('tun-missing', `cannot attach TAP ${name}: /dev/net/tun is not there (${why}); load the tun module (modprobe tun) or give the container the device`, { cause: err });
      if (code === 'EPERM' || code === 'EACCES') throw new NetPortError('permission-denied', `cannot attach TAP ${name}: ${why}; this needs CAP_NET_ADMIN, or a persistent TAP made for this user (ip tuntap add ${name} mode tap user $USER)`, { cause: err });
      if (code === 'EBUSY') throw new NetPortError('name-in-use', `cannot attach TAP ${name}: another process holds it (${why})`, { cause: err });
      if (code === 'EINVAL') throw new NetPortError('not-a-tap', `cannot attach TAP ${name}: an interface of that name exists and is not a single-queue TAP (${why}); it was not touched`, { cause: err });
      throw new NetPortError('open-failed', `cannot attach TAP ${name}: ${why}`, { cause: err });
    }
    return new TapFramePort(n, opened.fd, opened.name, vnetHdr);
  }

  get linkUp(): boolean {
    return this.up;
  }

  /** The offloads the kernel may hand this port now (see {@link setReceiveOffloads}). */
  get receiveOffloads(): OffloadSupport {
    return this.rxOffloads;
  }

  /**
   * Tells the kernel which offloaded frames it may hand this port (TUNSETOFFLOAD), normally what
   * the receiver on the other side takes (a guest's negotiated GUEST_* features): the kernel then
   * leaves checksums partial and large TCP/UDP frames unsegmented instead of finishing them. A
   * no-op without `vnetHdr`. Returns what was set: TSO, ECN, UFO and USO only with checksum
   * offload (the kernel's rule), USO only on kernels that know it (6.2 and later).
   */
  setReceiveOffloads(wanted: OffloadSupport): OffloadSupport {
    if (!this.vnetHdr || !this.up) return this.rxOffloads;
    const csum = wanted.csum;
    const s: OffloadSupport = { csum, tso4: csum && wanted.tso4, tso6: csum && wanted.tso6, ecn: csum && wanted.ecn && (wanted.tso4 || wanted.tso6), ufo: csum && wanted.ufo, uso: csum && wanted.uso };
    const flags = (s.csum ? TUN_F.CSUM : 0) | (s.tso4 ? TUN_F.TSO4 : 0) | (s.tso6 ? TUN_F.TSO6 : 0) | (s.ecn ? TUN_F.TSO_ECN : 0) | (s.ufo ? TUN_F.UFO : 0);
    try {
      this.n.tapSetOffload(this.fd, flags | (s.uso ? TUN_F.USO4 | TUN_F.USO6 : 0));
    } catch (err) {
      if (!s.uso) throw err;
      // A kernel before 6.2 does not know USO: the rest still applies.
      this.n.tapSetOffload(this.fd, flags);
      s.uso = false;
    }
    this.rxOffloads = Object.freeze(s);
    return this.rxOffloads;
  }

  send(frame: Uint8Array, offload?: NetOffload): boolean {
    if (!this.up) {
      this.counters.dropped++;
      return false;
    }
    if (this.vnetHdr) return this.write(frame, offload);
    // No header on the fd: offloads are finished here (a no-op for whole frames); true only
    // when every resulting frame went out.
    this.allWritten = true;
    return completeOffloads(frame, offload, NO_OFFLOADS, this.emitOne) > 0 && this.allWritten;
  }

  private write(frame: Uint8Array, offload: NetOffload | undefined): boolean {
    let r: number;
    try {
      if (this.vnetHdr) {
        this.header(offload);
        r = this.n.fdWrite2(this.fd, this.txHdr, frame);
      } else r = this.n.fdWrite2(this.fd, frame);
    } catch (err) {
      // EIO: the interface is down; EINVAL: a header the kernel rejects. Either way Ethernet drops.
      if (errnoOf(err) === 'EIO') this.counters.droppedDown++;
      else if (errnoOf(err) === 'EBADFD' || errnoOf(err) === 'EBADF') this.down(`the TAP is gone (${errnoOf(err)})`);
      else this.counters.dropped++;
      return false;
    }
    if (r < 0) {
      this.counters.dropped++;
      return false;
    }
    this.counters.txFrames++;
    return true;
  }

  /** The virtio_net_hdr for `offload` in txHdr (5.1.6, in the kernel's little-endian layout). */
  private header(o: NetOffload | undefined): void {
    const v = this.txView;
    this.txHdr.fill(0);
    if (o === undefined) return;
    let flags = 0;
    if (o.needsCsum !== undefined) {
      flags |= NET_HDR_F.NEEDS_CSUM;
      v.setUint16(NET_HDR.CSUM_START, o.needsCsum.start, true);
      v.setUint16(NET_HDR.CSUM_OFFSET, o.needsCsum.offset, true);
    }
    if (o.dataValid) flags |= NET_HDR_F.DATA_VALID;
    v.setUint8(NET_HDR.FLAGS, flags);
    const g = o.gso;
    if (g !== undefined) {
      const type = g.type === 'tcpv4' ? NET_HDR_GSO.TCPV4 : g.type === 'tcpv6' ? NET_HDR_GSO.TCPV6 : g.type === 'udp' ? NET_HDR_GSO.UDP : NET_HDR_GSO.UDP_L4;
      v.setUint8(NET_HDR.GSO_TYPE, type | (g.ecn ? NET_HDR_GSO.ECN : 0));
      v.setUint16(NET_HDR.HDR_LEN, g.headerLength, true);
      v.setUint16(NET_HDR.GSO_SIZE, g.segmentSize, true);
    }
  }

  private readable(events: number): void {
    if (!this.up) return;
    if (events < 0) {
      this.down('the TAP fd reported an error');
      return;
    }
    for (let i = 0; i < READ_BUDGET && this.up; i++) {
      let r: number;
      try {
        r = this.n.fdRead(this.fd, this.rx);
      } catch (err) {
        // EBADFD: the interface was deleted under the port (ip link del).
        this.down(`reading the TAP failed (${errnoOf(err) ?? String(err)})`);
        return;
      }
      if (r < 0) break;
      if (r === 0 && (events & POLL_DISCONNECT) !== 0) {
        this.down('the TAP hung up');
        return;
      }
      if (r < this.hdrLen + 14) {
        this.counters.malformed++;
        continue;
      }
      const frame = this.rx.subarray(this.hdrLen, r);
      const offload = this.vnetHdr ? this.parse(frame.length) : undefined;
      if (offload === null) {
        this.counters.malformed++;
        continue;
      }
      this.counters.rxFrames++;
      this.onFrame?.(frame, offload);
    }
  }

  /** The offload the kernel's header describes (undefined: none), null when it does not fit the frame. */
  private parse(len: number): NetOffload | undefined | null {
    const v = this.rxView;
    const flags = v.getUint8(NET_HDR.FLAGS);
    const gsoType = v.getUint8(NET_HDR.GSO_TYPE);
    if ((flags & (NET_HDR_F.NEEDS_CSUM | NET_HDR_F.DATA_VALID)) === 0 && gsoType === NET_HDR_GSO.NONE) return undefined;
    const o = this.rxOffload;
    o.needsCsum = undefined;
    o.gso = undefined;
    o.dataValid = (flags & NET_HDR_F.DATA_VALID) !== 0 ? true : undefined;
    if ((flags & NET_HDR_F.NEEDS_CSUM) !== 0) {
      const start = v.getUint16(NET_HDR.CSUM_START, true);
      const offset = v.getUint16(NET_HDR.CSUM_OFFSET, true);
      if (start + offset + 2 > len) return null;
      this.rxCsum.start = start;
      this.rxCsum.offset = offset;
      o.needsCsum = this.rxCsum;
    }
    const base = gsoType & ~NET_HDR_GSO.ECN;
    if (base !== NET_HDR_GSO.NONE) {
      const g = this.rxGso;
      if (base === NET_HDR_GSO.TCPV4) g.type = 'tcpv4';
      else if (base === NET_HDR_GSO.TCPV6) g.type = 'tcpv6';
      else if (base === NET_HDR_GSO.UDP) g.type = 'udp';
      else if (base === NET_HDR_GSO.UDP_L4) g.type = 'udp-l4';
      else return null;
      g.segmentSize = v.getUint16(NET_HDR.GSO_SIZE, true);
      g.headerLength = v.getUint16(NET_HDR.HDR_LEN, true);
      g.ecn = (gsoType & NET_HDR_GSO.ECN) !== 0;
      // GSO frames carry a partial checksum (5.1.6.2): one without is not something to pass on.
      if (g.segmentSize === 0 || o.needsCsum === undefined) return null;
      o.gso = g;
    }
    return o;
  }

  private down(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.endReason = reason;
    this.watch.close();
    this.onLinkChange?.(false);
  }

  /** Detaches from the interface (a TAP made by this port disappears; a persistent one stays). */
  close(): void {
    this.down('closed here');
    if (this.closed) return;
    this.closed = true;
    this.n.close(this.fd);
  }
}
