// Test support (not a test file): a misbehaving vhost-user back-end made from a correct one. A
// proxy listens on its own socket, passes every front-end message (and its fds) through to a
// real back-end (`virtio-ts serve`), and hands each back-end reply to `mutate`, which returns
// what the front-end gets instead: the same message, a changed one, none, or several. Each
// negative test breaks exactly one vhost-user rule this way and checks that probe names it.
import { native } from '../../src/native/index.js';
import { HEADER_SIZE, encodeMessage } from '../../src/transports/vhost-user/protocol.js';

const n = native();

/** A reply as the back-end sent it. */
export interface ProxiedReply {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/** What the front-end gets for one reply: messages (bytes) with the fds to send with each. */
export type Mutation = (reply: ProxiedReply, index: number) => { data: Uint8Array; fds: number[] }[];

/** The reply as it came. */
export function asIs(r: ProxiedReply): { data: Uint8Array; fds: number[] } {
  return { data: encode(r.request, r.flags, r.payload), fds: r.fds };
}

/** One message's bytes (the codec's own encoder: a reply is a message with the reply flag). */
export function encode(request: number, flags: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, flags, payload);
}

/** Sends all of `data` (fds with the first bytes), waiting on the event loop while the socket is full. */
async function sendAll(fd: number, data: Uint8Array, fds: number[]): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const sent = n.sendmsg(fd, data.subarray(at), at === 0 ? fds : []);
    if (sent > 0) at += sent;
    else await new Promise((res) => setTimeout(res, 1));
  }
}

/**
 * What becomes of one front-end message: passed on, or dropped (the back-end never sees it).
 * `fds` are the message's; the filter may look at them (a memory table's memfd) but not keep them.
 */
export type RequestFilter = (m: ProxiedReply) => 'pass' | 'drop';

/** The proxy: listening at `path`, forwarding to `upstream`. */
export class MutatingProxy {
  private readonly listener: number;
  private readonly watch: { close(): void };
  private readonly open = new Set<() => void>();
  /** Replies seen so far (across connections). */
  replies = 0;
  /** New connections are accepted and closed at once (a back-end that no longer serves). */
  refuseNew = false;
  private listening = true;

  constructor(
    readonly path: string,
    readonly upstream: string,
    private readonly mutate: Mutation,
    private readonly filter: RequestFilter = () => 'pass',
  ) {
    this.listener = n.listen(path);
    this.watch = n.watch(this.listener, true, false, () => {
      for (let fd = n.accept(this.listener); fd >= 0; fd = n.accept(this.listener)) {
        if (this.refuseNew) n.close(fd);
        else this.serve(fd);
      }
    });
  }

  /** Stops listening, leaving the socket file (connections are refused: what a crashed back-end leaves). */
  stopListening(): void {
    if (!this.listening) return;
    this.listening = false;
    this.watch.close();
    n.close(this.listener);
  }

  private serve(front: number): void {
    let back: number;
    try {
      back = n.connect(this.upstream);
    } catch {
      n.close(front);
      return;
    }
    let closed = false;
    let chain = Promise.resolve(); // messages go out in order
    const buf = new Uint8Array(65536);
    const close = () => {
      if (closed) return;
      closed = true;
      this.open.delete(close);
      fw.close();
      bw.close();
      n.close(front);
      n.close(back);
    };
    this.open.add(close);
    // Messages in both directions are framed: a read stops right after the bytes an fd came
    // with, so the fds of a read belong to the last message it completes.
    const framer = (from: number, onMessage: (m: ProxiedReply) => void) => {
      let pending = new Uint8Array(0);
      let pendingFds: number[] = [];
      return () => {
        for (;;) {
          let r;
          try {
            r = n.recvmsg(from, buf);
          } catch {
            return close();
          }
          if (r.bytes === 0) return close();
          if (r.bytes < 0) return;
          const grown = new Uint8Array(pending.length + r.bytes);
          grown.set(pending);
          grown.set(buf.subarray(0, r.bytes), pending.length);
          pending = grown;
          pendingFds.push(...r.fds);
          const done: ProxiedReply[] = [];
          while (pending.length >= HEADER_SIZE) {
            const v = new DataView(pending.buffer, pending.byteOffset);
            const size = v.getUint32(8, true);
            if (pending.length < HEADER_SIZE + size) break;
            done.push({ request: v.getUint32(0, true), flags: v.getUint32(4, true), payload: pending.slice(HEADER_SIZE, HEADER_SIZE + size), fds: [] });
            pending = pending.slice(HEADER_SIZE + size);
          }
          if (done.length > 0 && pending.length === 0) {
            done[done.length - 1].fds = pendingFds;
            pendingFds = [];
          }
          for (const m of done) onMessage(m);
        }
      };
    };
    const fw = n.watch(
      front,
      true,
      false,
      framer(front, (m) => {
        if (this.filter(m) === 'drop') {
          m.fds.forEach((fd) => n.close(fd));
          return;
        }
        chain = chain.then(() => sendAll(back, encode(m.request, m.flags, m.payload), m.fds).finally(() => m.fds.forEach((fd) => n.close(fd)))).catch(close);
      }),
    );
    const bw = n.watch(
      back,
      true,
      false,
      framer(back, (reply) => {
        const out = this.mutate(reply, this.replies++);
        chain = chain
          .then(async () => {
            for (const m of out) await sendAll(front, m.data, m.fds);
            for (const fd of reply.fds) n.close(fd);
          })
          .catch(close);
      }),
    );
  }

  close(): void {
    for (const c of [...this.open]) c();
    this.stopListening();
  }
}
