// The frame-port interface (issue 15): one end of an Ethernet link. A virtio-net device's
// back-end side, a NetDriver in Node, a switch port, a TAP device and a unix socket speaking
// QEMU's `-netdev stream`/`dgram` framing all look alike through it, so any two can be wired
// together (or joined on a NetSwitch) without knowing what the other is.
//
// The offload metadata is the *meaning* of a virtio-net header (spec 5.1.6), free of any header
// layout: the device and the driver translate between the header bytes their negotiated
// features imply and this shape; a port that cannot take an offload gets the frame completed
// (checksum filled) or segmented in software by whoever hands it over (src/net/offload.ts).
//
// Browser-safe: no Node module here.

/** What a virtio-net header means (spec 5.1.6), free of any header layout. */
export interface NetOffload {
  /**
   * VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum over the bytes from `start` to the end of the frame
   * is still to be computed and stored at `start + offset` (the field holds the pseudo-header sum).
   */
  needsCsum?: { start: number; offset: number };
  /** VIRTIO_NET_HDR_F_DATA_VALID: the checksum is known to be good (receive side). */
  dataValid?: boolean;
  /**
   * GSO: a frame larger than the MTU, to be cut into segments of `segmentSize` payload bytes;
   * `headerLength` counts the Ethernet, IP and transport headers; `ecn`: the TCP frame carries
   * CWR on its first segment only (VIRTIO_NET_HDR_GSO_ECN). 'udp' is UFO (IP fragmentation),
   * 'udp-l4' is USO (one UDP datagram per segment).
   */
  gso?: { type: 'tcpv4' | 'tcpv6' | 'udp' | 'udp-l4'; segmentSize: number; headerLength: number; ecn: boolean };
}

/** Which offloads a port takes as they are; the sender completes (checksum) or segments the rest. */
export interface OffloadSupport {
  /** Frames with `needsCsum` (a partial checksum). */
  csum: boolean;
  /** TCP over IPv4 GSO frames. */
  tso4: boolean;
  /** TCP over IPv6 GSO frames. */
  tso6: boolean;
  /** TCP GSO frames with the ECN flag. */
  ecn: boolean;
  /** UDP fragmentation offload frames (gso type 'udp'). */
  ufo: boolean;
  /** UDP segmentation offload frames (gso type 'udp-l4'). */
  uso: boolean;
}

/** A port that takes no offload: every frame arrives whole and with its checksums filled. */
export const NO_OFFLOADS: Readonly<OffloadSupport> = Object.freeze({ csum: false, tso4: false, tso6: false, ecn: false, ufo: false, uso: false });

/** A port that takes every offload as it is. */
export const ALL_OFFLOADS: Readonly<OffloadSupport> = Object.freeze({ csum: true, tso4: true, tso6: true, ecn: true, ufo: true, uso: true });

/** One end of an Ethernet link: a device's backend, a driver, a switch port, TAP, a socket. */
export interface FramePort {
  /** A name for logs and errors ("switch:3", "tap0", "net0"). */
  readonly name: string;
  /** The offloads `send` takes as they are (may change when a guest renegotiates). */
  readonly accepts: OffloadSupport;
  /**
   * Hands one frame (Ethernet header first, no FCS) to the other side; the port copies what it
   * keeps, so the caller may reuse `frame` when this returns. false: dropped (full or closed),
   * as Ethernet drops; the caller never waits.
   */
  send(frame: Uint8Array, offload?: NetOffload): boolean;
  /** Where this port's incoming frames go (the frame is valid only during the call). */
  onFrame: ((frame: Uint8Array, offload: NetOffload | undefined) => void) | null;
  /** Link state as the port sees it (a closed socket, a TAP going down). */
  readonly linkUp: boolean;
  /** Called when `linkUp` changes. */
  onLinkChange: ((up: boolean) => void) | null;
  /** Releases the port's resources; afterwards `send` returns false and `linkUp` is false. */
  close(): void;
}
