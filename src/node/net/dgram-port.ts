/**
 * A frame port over a unix datagram socket in QEMU's `-netdev dgram` framing (net/dgram.c: one
 * frame per datagram, no length, no virtio-net header): a QEMU guest with a built-in NIC
 * (`-netdev dgram,id=n0,local.type=unix,local.path=Q,remote.type=unix,remote.path=P`) and this
 * port bound to P and sending to Q are the two ends of one cable. `virtio-ts switch --dgram P,Q`
 * puts such a port on the switch.
 *
 * The local path must not exist (nothing is replaced) and is removed at close if it is still
 * the socket made here. The peer may come and go: until its socket exists, frames sent are
 * dropped (counted); the socket is connected to the peer's path as soon as it is there, and
 * from then on takes datagrams from that peer only. Datagrams are read non-blocking, woken by
 * the addon's fd watch; one receive buffer, nothing allocated per frame.
 */
import { lstatSync, unlinkSync, type Stats } from 'node:fs';
import { native, type NativeAddon } from '../../native/index.js';
import { errnoOf } from '../../native/errno.js';
import type { FramePort, NetOffload, OffloadSupport } from '../../net/frame-port.js';
import { NO_OFFLOADS } from '../../net/frame-port.js';
import { completeOffloads } from '../../net/offload.js';
import { MAX_SOCKET_PATH } from '../../transports/vhost-user/socket-path.js';
import { NetPortError } from './errors.js';

/** The largest datagram QEMU's dgram netdev sends or reads (NET_BUFSIZE: 4096 + 65536). */
export const MAX_DGRAM_FRAME = 4096 + 65536;

/** Datagrams read per wake-up before the loop gets a turn (the watch wakes again while more wait). */
const READ_BUDGET = 256;

/** What a datagram port counted. */
export interface DgramPortCounters {
  /** Frames received and handed to onFrame. */
  rxFrames: number;
  /** Frames sent. */
  txFrames: number;
  /** Frames dropped: the peer's socket not there yet, full, or gone. */
  dropped: number;
  /** Datagrams that cannot be a frame (under 14 bytes, or over MAX_DGRAM_FRAME), dropped. */
  malformed: number;
}

/** One end of a `-netdev dgram` link as a frame port (takes no offloads: the framing has no header). */
export class DgramFramePort implements FramePort {
  readonly accepts: OffloadSupport = NO_OFFLOADS;
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null = null;
  onLinkChange: ((up: boolean) => void) | null = null;
  readonly counters: DgramPortCounters = { rxFrames: 0, txFrames: 0, dropped: 0, malformed: 0 };
  private up = true;
  private connected = false;
  private allWritten = true;
  private readonly rx = new Uint8Array(MAX_DGRAM_FRAME + 1);
  private readonly watch: { close(): void };
  private readonly emitOne = (f: Uint8Array) => this.write(f);

  private constructor(
    private readonly n: NativeAddon,
    private readonly fd: number,
    private readonly made: Stats,
    /** The path this port is bound to. */
    readonly localPath: string,
    /** The path datagrams go to (the peer's local path). */
    readonly remotePath: string,
  ) {
    this.watch = n.watch(fd, true, false, () => this.readable());
    this.tryConnect();
  }

  /** A name for logs. */
  get name(): string {
    return `dgram:${this.localPath}`;
  }

  /**
   * Binds `localPath` (must not exist) and sends to `remotePath`. Throws a NetPortError:
   * `bad-path`, `path-in-use`, `open-failed` (and a NativeAddonError without the addon).
   */
  static open(localPath: string, remotePath: string): DgramFramePort {
    for (const p of [localPath, remotePath]) {
      if (p === '' || Buffer.byteLength(p) > MAX_SOCKET_PATH) throw new NetPortError('bad-path', `socket path "${p}" must be 1 to ${MAX_SOCKET_PATH} bytes long`);
    }
    const n = native();
    let fd: number;
    try {
      fd = n.dgramBind(localPath);
    } catch (err) {
      if (errnoOf(err) === 'EADDRINUSE') throw new NetPortError('path-in-use', `${localPath} exists already: nothing is replaced; remove it or pick another path`, { cause: err });
      throw new NetPortError('open-failed', `cannot bind a datagram socket to ${localPath}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return new DgramFramePort(n, fd, lstatSync(localPath), localPath, remotePath);
  }

  get linkUp(): boolean {
    return this.up;
  }

  /** Whether the peer's socket was there when last tried (frames go out only then). */
  get peerConnected(): boolean {
    return this.connected;
  }

  private tryConnect(): boolean {
    if (!this.connected && this.up) this.connected = this.n.dgramConnect(this.fd, this.remotePath) === '';
    return this.connected;
  }

  send(frame: Uint8Array, offload?: NetOffload): boolean {
    if (!this.up || !this.tryConnect()) {
      this.counters.dropped++;
      return false;
    }
    // true only when every frame written went out (a checksum completed or segments cut here: all of them).
    this.allWritten = true;
    return completeOffloads(frame, offload, NO_OFFLOADS, this.emitOne) > 0 && this.allWritten;
  }

  private write(frame: Uint8Array): void {
    let r: number;
    try {
      r = this.n.fdWrite2(this.fd, frame);
    } catch {
      // ECONNREFUSED / ENOTCONN: the peer's socket went away (a QEMU restarting); the next send
      // connects again to whatever is bound there then.
      this.connected = false;
      this.counters.dropped++;
      this.allWritten = false;
      return;
    }
    if (r < 0) {
      // The peer's queue is full (net.unix.max_dgram_qlen): dropped, as Ethernet drops.
      this.counters.dropped++;
      this.allWritten = false;
    } else this.counters.txFrames++;
  }

  private readable(): void {
    for (let i = 0; i < READ_BUDGET && this.up; i++) {
      let r: number;
      try {
        r = this.n.fdRead(this.fd, this.rx);
      } catch {
        // A datagram socket reports a refused earlier send here (ECONNREFUSED): not fatal.
        this.connected = false;
        continue;
      }
      if (r < 0) return;
      if (r < 14 || r > MAX_DGRAM_FRAME) {
        this.counters.malformed++;
        continue;
      }
      // A peer that bound after this port was made: answer it from now on.
      this.tryConnect();
      this.counters.rxFrames++;
      this.onFrame?.(this.rx.subarray(0, r), undefined);
    }
  }

  /** Stops, closes the socket and removes the local path if it is still the socket made here. */
  close(): void {
    if (!this.up) return;
    this.up = false;
    this.watch.close();
    this.n.close(this.fd);
    try {
      const now = lstatSync(this.localPath);
      if (now.ino === this.made.ino && now.dev === this.made.dev) unlinkSync(this.localPath);
    } catch {
      // gone already
    }
    this.onLinkChange?.(false);
  }
}
