// The front-end against back-ends that break the protocol: a scripted back-end on a real unix
// socket answers each request as a case wants (not at all, without the reply flag, for another
// request, with the wrong size or fds, with a refusal, with an unasked message, by hanging up).
// Each case ends in a FrontEndError of its kind, never a hang: the bound of every wait is
// `timeoutMs`, and a case only checks the kind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/index.js';
import { DeviceId, Feature } from '../../src/spec/constants.js';
import { BackendReq, encodeMessage, F_PROTOCOL_FEATURES, FLAG_NEED_REPLY, FLAG_REPLY, ProtocolFeature, Req, statePayload, u64Payload, VERSION } from '../../src/transports/vhost-user/protocol.js';
import { VhostUserFrontEnd, type VhostUserFrontEndOptions } from '../../src/transports/vhost-user/frontend/front-end.js';
import { FrontEndError, type FrontEndErrorKind } from '../../src/transports/vhost-user/frontend/errors.js';
import { MessageSocket, type RawMessage } from '../../src/transports/vhost-user/frontend/channel.js';
import { BlkDriver } from '../../src/drivers/blk.js';
import { scratch } from './frontend-peers.js';
import { until } from '../wait.js';

const n = native();
const pf = (b: number) => 1n << BigInt(b);
const FEATURES = pf(Feature.VERSION_1) | pf(F_PROTOCOL_FEATURES);
const PROTOCOL = pf(ProtocolFeature.REPLY_ACK) | pf(ProtocolFeature.CONFIG) | pf(ProtocolFeature.BACKEND_REQ) | pf(ProtocolFeature.MQ) | pf(ProtocolFeature.INFLIGHT_SHMFD);

/** How the scripted back-end answers: `send` writes a raw message on the connection. */
interface Answer {
  reply(request: number, payload?: Uint8Array, flags?: number, fds?: number[]): void;
  u64(request: number, value: bigint): void;
  hangUp(): void;
}

/** A case's script: return true when it handled the message, false for the standard answer. */
type Script = (m: RawMessage, a: Answer, fake: FakeBackend) => boolean;

/** A back-end that answers like a plain one, except where `script` says otherwise. */
class FakeBackend {
  readonly listenFd: number;
  private readonly acceptWatch: { close(): void };
  conn: MessageSocket | null = null;
  /** Our end of the back-end request channel, once SET_BACKEND_REQ_FD came. */
  channel = -1;
  channelReplies: RawMessage[] = [];
  private channelSocket: MessageSocket | null = null;
  readonly seen: number[] = [];

  constructor(
    readonly path: string,
    private readonly script: Script,
  ) {
    this.listenFd = n.listen(path);
    this.acceptWatch = n.watch(this.listenFd, true, false, () => {
      const fd = n.accept(this.listenFd);
      if (fd < 0) return;
      this.conn = new MessageSocket(
        fd,
        n,
        (m) => this.handle(fd, m),
        () => undefined,
      );
    });
  }

  private handle(fd: number, m: RawMessage): void {
    this.seen.push(m.request);
    const a: Answer = {
      reply: (request, payload, flags = VERSION | FLAG_REPLY, fds = []) => void n.sendmsg(fd, encodeMessage(request, flags, payload), fds),
      u64: (request, value) => a.reply(request, u64Payload(value)),
      hangUp: () => this.conn?.close(new FrontEndError('disconnected', 'hung up by the script')),
    };
    if (m.request === Req.SET_BACKEND_REQ_FD && m.fds.length === 1) {
      this.channel = m.fds[0];
      this.channelSocket = new MessageSocket(
        this.channel,
        n,
        (r) => this.channelReplies.push(r),
        () => undefined,
      );
      m.fds = [];
    }
    for (const f of m.fds) n.close(f);
    if (this.script(m, a, this)) return;
    switch (m.request) {
      case Req.GET_FEATURES:
        return a.u64(m.request, FEATURES);
      case Req.GET_PROTOCOL_FEATURES:
        return a.u64(m.request, PROTOCOL);
      case Req.GET_QUEUE_NUM:
        return a.u64(m.request, 1n);
      case Req.GET_VRING_BASE:
        return a.reply(m.request, statePayload(new DataView(m.payload.buffer).getUint32(0, true), 0));
      case Req.GET_CONFIG: {
        const out = new Uint8Array(m.payload.length);
        out.set(m.payload.subarray(0, 12));
        return a.reply(m.request, out);
      }
      case Req.GET_INFLIGHT_FD: {
        const fdi = n.memfdCreate('inflight', 4096);
        const p = new Uint8Array(24);
        p.set(m.payload.subarray(16, 20), 16);
        new DataView(p.buffer).setBigUint64(0, 4096n, true);
        a.reply(m.request, p, VERSION | FLAG_REPLY, [fdi]);
        n.close(fdi);
        return;
      }
      default:
        if (m.flags & FLAG_NEED_REPLY) a.u64(m.request, 0n);
    }
  }

  /** Sends a back-end request on the back-end channel. */
  request(request: number, flags: number, payload?: Uint8Array): void {
    n.sendmsg(this.channel, encodeMessage(request, flags, payload));
  }

  close(): void {
    this.acceptWatch.close();
    this.conn?.close(new FrontEndError('disconnected', 'test over'));
    this.channelSocket?.close(new FrontEndError('disconnected', 'test over'));
    n.close(this.listenFd);
  }
}

/** Runs `body` against a scripted back-end; the front-end's waits are bounded by 2 s (a hang guard; no case depends on it but 'timeout'). */
async function withFake(script: Script, body: (options: VhostUserFrontEndOptions, fake: FakeBackend) => Promise<void>): Promise<void> {
  const s = scratch();
  const fake = new FakeBackend(`${s.dir}/sock`, script);
  try {
    await body({ socketPath: fake.path, deviceId: DeviceId.BLOCK, timeoutMs: 2000, memorySize: 1 << 20 }, fake);
  } finally {
    fake.close();
    s.remove();
  }
}

const kind = (k: FrontEndErrorKind) => (e: unknown) => e instanceof FrontEndError && e.kind === k;

/** Cases where a connect (the session's first requests) must fail with a kind. */
const connectCases: { name: string; kind: FrontEndErrorKind; script: Script }[] = [
  { name: 'never answers GET_FEATURES', kind: 'timeout', script: (m) => m.request === Req.GET_FEATURES },
  { name: 'answers without the reply flag', kind: 'bad-reply', script: (m, a) => m.request === Req.GET_FEATURES && (a.reply(m.request, u64Payload(FEATURES), VERSION), true) },
  { name: 'answers with protocol version 2', kind: 'bad-reply', script: (m, a) => m.request === Req.GET_FEATURES && (a.reply(m.request, u64Payload(FEATURES), 2 | FLAG_REPLY), true) },
  { name: 'answers for another request', kind: 'bad-reply', script: (m, a) => m.request === Req.GET_FEATURES && (a.reply(Req.GET_PROTOCOL_FEATURES, u64Payload(FEATURES)), true) },
  { name: 'answers GET_FEATURES with 4 bytes', kind: 'bad-reply', script: (m, a) => m.request === Req.GET_FEATURES && (a.reply(m.request, new Uint8Array(4)), true) },
  {
    name: 'answers GET_FEATURES with an fd',
    kind: 'bad-reply',
    script: (m, a) => {
      if (m.request !== Req.GET_FEATURES) return false;
      const e = n.eventfd();
      a.reply(m.request, u64Payload(FEATURES), VERSION | FLAG_REPLY, [e]);
      n.close(e);
      return true;
    },
  },
  { name: 'hangs up on GET_PROTOCOL_FEATURES', kind: 'disconnected', script: (m, a) => m.request === Req.GET_PROTOCOL_FEATURES && (a.hangUp(), true) },
  { name: 'refuses SET_OWNER (REPLY_ACK 1)', kind: 'refused', script: (m, a) => m.request === Req.SET_OWNER && (a.u64(m.request, 1n), true) },
  { name: 'answers GET_QUEUE_NUM with 0 queues', kind: 'bad-reply', script: (m, a) => m.request === Req.GET_QUEUE_NUM && (a.u64(m.request, 0n), true) },
  { name: 'answers a REPLY_ACK with 16 bytes', kind: 'bad-reply', script: (m, a) => m.request === Req.SET_PROTOCOL_FEATURES && (a.reply(m.request, new Uint8Array(16)), true) },
];

for (const c of connectCases) {
  test(`a back-end that ${c.name}: connect fails with '${c.kind}'`, async () => {
    await withFake(c.script, async (options) => {
      await assert.rejects(VhostUserFrontEnd.connect(options), kind(c.kind));
    });
  });
}

test("a back-end that announces a payload of 1 MiB: 'bad-reply', the connection ends", async () => {
  await withFake(
    (m, _a, fake) => {
      if (m.request !== Req.GET_FEATURES) return false;
      const h = new Uint8Array(12);
      const v = new DataView(h.buffer);
      v.setUint32(0, Req.GET_FEATURES, true);
      v.setUint32(4, VERSION | FLAG_REPLY, true);
      v.setUint32(8, 1 << 20, true);
      n.sendmsg(fake.conn!.fd, h);
      return true;
    },
    async (options) => {
      await assert.rejects(VhostUserFrontEnd.connect(options), kind('bad-reply'));
    },
  );
});

test("nobody listens: 'connect'", async () => {
  const s = scratch();
  try {
    await assert.rejects(VhostUserFrontEnd.connect({ socketPath: `${s.dir}/none`, deviceId: DeviceId.BLOCK }), kind('connect'));
  } finally {
    s.remove();
  }
});

test("an unasked message on the front-end's socket ends the connection ('bad-reply', told to onDisconnect)", async () => {
  await withFake(
    () => false,
    async (options, fake) => {
      const fe = await VhostUserFrontEnd.connect(options);
      let lost: FrontEndError | null = null;
      fe.onDisconnect = (e) => (lost = e);
      n.sendmsg(fake.conn!.fd, encodeMessage(Req.GET_FEATURES, VERSION | FLAG_REPLY, u64Payload(FEATURES)));
      await until(() => lost !== null, 'the front-end to drop the connection');
      assert.equal(lost!.kind, 'bad-reply');
      assert.equal(fe.connected, false);
      await assert.rejects(fe.getConfig(0, 8), kind('disconnected'));
      await fe.close();
    },
  );
});

test("GET_CONFIG refused (an empty reply, as libvhost-user refuses) is 'refused'; a reply for another offset is 'bad-reply'", async () => {
  let mode: 'refuse' | 'shift' = 'refuse';
  await withFake(
    (m, a) => {
      if (m.request !== Req.GET_CONFIG) return false;
      if (mode === 'refuse') a.reply(m.request);
      else {
        const out = new Uint8Array(m.payload.length);
        out.set(m.payload.subarray(0, 12));
        new DataView(out.buffer).setUint32(0, 4, true);
        a.reply(m.request, out);
      }
      return true;
    },
    async (options) => {
      const fe = await VhostUserFrontEnd.connect(options);
      await assert.rejects(fe.getConfig(0, 8), kind('refused'));
      mode = 'shift';
      await assert.rejects(fe.getConfig(0, 8), kind('bad-reply'));
      await fe.close();
    },
  );
});

test("GET_VRING_BASE answered for another queue, or never: 'bad-reply' / 'timeout'; a BlkDriver over it fails, never hangs", async () => {
  let mode: 'other' | 'silent' = 'other';
  await withFake(
    (m, a) => {
      if (m.request !== Req.GET_VRING_BASE) return false;
      if (mode === 'other') a.reply(m.request, statePayload(5, 0));
      return true;
    },
    async (options) => {
      for (const m of ['other', 'silent'] as const) {
        mode = m;
        const fe = await VhostUserFrontEnd.connect(options);
        const blk = new BlkDriver(fe);
        // The fake has no config space to speak of (all zeros): capacity 0, but it starts.
        await blk.start();
        await assert.rejects(fe.stopQueue(0), kind(m === 'other' ? 'bad-reply' : 'timeout'));
        await fe.close();
      }
    },
  );
});

test("GET_INFLIGHT_FD answered without its fd: 'bad-reply' at DRIVER_OK", async () => {
  await withFake(
    (m, a) => m.request === Req.GET_INFLIGHT_FD && (a.reply(m.request, new Uint8Array(24)), true),
    async (options) => {
      const fe = await VhostUserFrontEnd.connect(options);
      const blk = new BlkDriver(fe);
      await assert.rejects(blk.start(), kind('bad-reply'));
      await fe.close();
    },
  );
});

test('the back-end request channel: CONFIG_CHANGE_MSG is the driver config event, acknowledged when asked; a malformed request is recorded and refused', async () => {
  await withFake(
    () => false,
    async (options, fake) => {
      const fe = await VhostUserFrontEnd.connect(options);
      let events = 0;
      fe.listen({ used: () => undefined, config: () => events++ });
      await until(() => fake.channel >= 0, 'the back-end channel');
      const gen = await fe.configGeneration();
      fake.request(BackendReq.CONFIG_CHANGE_MSG, VERSION | FLAG_NEED_REPLY);
      await until(() => fake.channelReplies.length === 1, 'the acknowledgement');
      assert.equal(events, 1);
      assert.notEqual(await fe.configGeneration(), gen);
      const ack = fake.channelReplies[0];
      assert.equal(ack.flags, VERSION | FLAG_REPLY);
      assert.equal(new DataView(ack.payload.buffer).getBigUint64(0, true), 0n);
      // A request with the reply flag set, and one with a payload CONFIG_CHANGE_MSG never has.
      fake.request(BackendReq.CONFIG_CHANGE_MSG, VERSION | FLAG_REPLY | FLAG_NEED_REPLY);
      fake.request(BackendReq.CONFIG_CHANGE_MSG, VERSION | FLAG_NEED_REPLY, new Uint8Array(8));
      await until(() => fake.channelReplies.length === 3 && fe.backendErrors.length === 2, 'both to be refused and recorded');
      assert.ok(fe.backendErrors.every((e) => e.kind === 'bad-message'));
      for (const r of fake.channelReplies.slice(1)) assert.equal(new DataView(r.payload.buffer).getBigUint64(0, true), 1n, 'refused with a non-zero ack');
      assert.equal(events, 1, 'no config event for either');
      await fe.close();
    },
  );
});
