/** virtio-net on the wire (spec 5.1): feature bit numbers (5.1.3). */
export const NET_FEATURES = {
  CSUM: 0, GUEST_CSUM: 1, CTRL_GUEST_OFFLOADS: 2, MTU: 3, MAC: 5, GSO: 6, GUEST_TSO4: 7, GUEST_TSO6: 8, GUEST_ECN: 9,
  GUEST_UFO: 10, HOST_TSO4: 11, HOST_TSO6: 12, HOST_ECN: 13, HOST_UFO: 14, MRG_RXBUF: 15, STATUS: 16, CTRL_VQ: 17,
  CTRL_RX: 18, CTRL_VLAN: 19, CTRL_RX_EXTRA: 20, GUEST_ANNOUNCE: 21, MQ: 22, CTRL_MAC_ADDR: 23, GUEST_RSC4: 41,
  GUEST_RSC6: 42, DEVICE_STATS: 50, HASH_TUNNEL: 51, VQ_NOTF_COAL: 52, NOTF_COAL: 53, GUEST_USO4: 54, GUEST_USO6: 55,
  HOST_USO: 56, HASH_REPORT: 57, GUEST_HDRLEN: 59, RSS: 60, RSC_EXT: 61, STANDBY: 62, SPEED_DUPLEX: 63, RSS_CONTEXT: 64,
  GUEST_UDP_TUNNEL_GSO: 65, GUEST_UDP_TUNNEL_GSO_CSUM: 66, HOST_UDP_TUNNEL_GSO: 67, HOST_UDP_TUNNEL_GSO_CSUM: 68,
  OUT_NET_HEADER: 69, IPSEC: 70,
} as const;


/** virtio_net_config field offsets (5.1.4). */
export const NET_CONFIG = {
  MAC: 0, STATUS: 6, MAX_VIRTQUEUE_PAIRS: 8, MTU: 10, SPEED: 12, DUPLEX: 16, RSS_MAX_KEY_SIZE: 17,
  RSS_MAX_INDIRECTION_TABLE_LENGTH: 18, SUPPORTED_HASH_TYPES: 20,
  /** Bytes of the layout up to and including supported_hash_types. */
  SIZE: 24,
} as const;

/** virtio_net_config.status bits (5.1.4). */
export const NET_STATUS = { LINK_UP: 1, ANNOUNCE: 2 } as const;

/** virtio_net_hdr.flags (5.1.6). */
export const NET_HDR_F = { NEEDS_CSUM: 1, DATA_VALID: 2, RSC_INFO: 4 } as const;

/** virtio_net_hdr.gso_type (5.1.6); ECN is a flag on the TCP types. */
export const NET_HDR_GSO = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const;

/**
 * virtio_net_hdr sizes (5.1.6): the legacy header without MRG_RXBUF has no num_buffers (10
 * bytes); VERSION_1 or MRG_RXBUF adds it (12); HASH_REPORT adds hash_value, hash_report and
 * padding (20).
 */
export const NET_HDR_SIZE = { LEGACY: 10, NUM_BUFFERS: 12, HASH_REPORT: 20 } as const;

/** Field offsets in virtio_net_hdr (5.1.6). */
export const NET_HDR = { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8, NUM_BUFFERS: 10, HASH_VALUE: 12, HASH_REPORT: 16 } as const;

/** Control queue classes and commands (5.1.6.5). */
export const NET_CTRL = {
  OK: 0, ERR: 1,
  RX: 0, RX_PROMISC: 0, RX_ALLMULTI: 1, RX_ALLUNI: 2, RX_NOMULTI: 3, RX_NOUNI: 4, RX_NOBCAST: 5,
  MAC: 1, MAC_TABLE_SET: 0, MAC_ADDR_SET: 1,
  VLAN: 2, VLAN_ADD: 0, VLAN_DEL: 1,
  ANNOUNCE: 3, ANNOUNCE_ACK: 0,
  MQ: 4, MQ_VQ_PAIRS_SET: 0, MQ_RSS_CONFIG: 1, MQ_HASH_CONFIG: 2,
  GUEST_OFFLOADS: 5, GUEST_OFFLOADS_SET: 0,
  NOTF_COAL: 6,
} as const;

/** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN / _MAX (5.1.6.5.6). */
export const NET_MQ_PAIRS = { MIN: 1, MAX: 0x8000 } as const;

/** Smallest receive buffers the spec asks for without MRG_RXBUF (5.1.6.3.1): 1514 + header, 65550 + header with guest GSO. */
export const NET_RX_BUFFER = { SMALL_FRAME: 1514, GSO_FRAME: 65550 } as const;
