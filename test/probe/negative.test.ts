// Negative tests of virtio-ts probe: back-ends that break exactly one rule, and the probe must
// name that rule's id (and find the report not clean). The vhost-user rules are broken by a
// proxy in front of a correct back-end that changes one reply (proxy.ts); the virtio clause by
// a device with a planted fault; the CLI run checks exit status 1 and the clause in --json.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Monitor } from '../../src/monitor/monitor.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { BlkDevice } from '../../src/devices/blk/device.js';
import { MemoryBlockStorage } from '../../src/devices/blk/storage.js';
import { serveVhostUser, type VhostUserDaemon } from '../../src/transports/vhost-user/daemon.js';
import { FLAG_REPLY, Req, u64Payload } from '../../src/transports/vhost-user/protocol.js';
import { Status } from '../../src/spec/constants.js';
import { native } from '../../src/native/index.js';
import { runProbe } from '../../src/probe/probe.js';
import type { ProbeReport } from '../../src/probe/report.js';
import { MutatingProxy, asIs, encode, type Mutation, type ProxiedReply, type RequestFilter } from './proxy.js';
import { WAIT_MS } from '../wait.js';

const bin = join(fileURLToPath(import.meta.url), '../../../src/cli/main.js');

let dir = '';
let rng: VhostUserDaemon;
let blk: VhostUserDaemon;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-probe-neg-'));
  rng = serveVhostUser(() => new RngDevice({ monitor: new Monitor({ mode: 'tolerant' }) }), { socket: join(dir, 'rng.sock') });
  blk = serveVhostUser(() => new BlkDevice({ storage: new MemoryBlockStorage(1 << 20), monitor: new Monitor({ mode: 'tolerant' }) }), { socket: join(dir, 'blk.sock') });
});
after(async () => {
  await rng.close();
  await blk.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The ids of the failed checks and failed hostile cases' clauses. */
function failed(r: ProbeReport): string[] {
  return [...r.checks.filter((c) => c.status === 'fail').map((c) => c.id), ...(r.hostile ?? []).filter((h) => !h.ok && h.clause).map((h) => `${h.id}:${h.clause}`)];
}

/** Only the `nth` reply of `request` (counting from 0) changed by `change`. */
function onFirst(request: number, change: (r: ProxiedReply) => { data: Uint8Array; fds: number[] }[], nth = 0): Mutation {
  let seen = 0;
  return (r) => (r.request === request && (r.flags & FLAG_REPLY) !== 0 && seen++ === nth ? change(r) : [asIs(r)]);
}

let k = 0;
/** Probes `type` through a proxy that applies `mutate`. */
async function probeThrough(type: 'rng' | 'blk', mutate: Mutation, options: { cases?: string[]; waitMs?: number } = {}): Promise<ProbeReport> {
  const path = join(dir, `proxy-${k++}.sock`);
  const proxy = new MutatingProxy(path, join(dir, `${type}.sock`), mutate);
  try {
    return await runProbe({ socketPath: path, type, waitMs: options.waitMs ?? WAIT_MS, ...(options.cases ? { cases: options.cases } : {}) });
  } finally {
    proxy.close();
  }
}

const u64 = (r: ProxiedReply) => new DataView(r.payload.buffer, r.payload.byteOffset).getBigUint64(0, true);

describe('virtio-ts probe names the vhost-user rule a back-end breaks', () => {
  test('the proxy itself changes nothing: a clean report through it', async () => {
    const r = await probeThrough('rng', (x) => [asIs(x)]);
    assert.deepEqual(failed(r), []);
    assert.equal(r.summary.clean, true);
  });

  const cases: [string, 'rng' | 'blk', Mutation, { cases?: string[]; waitMs?: number }?][] = [
    ['vhost-user.reply.flags', 'rng', onFirst(Req.GET_FEATURES, (r) => [{ data: encode(r.request, 1 | FLAG_REPLY | 8, r.payload), fds: r.fds }])],
    ['vhost-user.reply.size', 'rng', onFirst(Req.GET_QUEUE_NUM, (r) => [{ data: encode(r.request, r.flags, r.payload.subarray(0, 4)), fds: r.fds }])],
    ['vhost-user.reply.request', 'rng', onFirst(Req.GET_PROTOCOL_FEATURES, (r) => [{ data: encode(Req.GET_QUEUE_NUM, r.flags, r.payload), fds: r.fds }])],
    ['vhost-user.reply.fds', 'rng', onFirst(Req.GET_FEATURES, (r) => [{ data: encode(r.request, r.flags, r.payload), fds: [native().eventfd()] }])],
    [
      'vhost-user.reply.unasked',
      'rng',
      onFirst(Req.GET_VRING_BASE, (r) => [{ data: encode(Req.SET_VRING_CALL, 1 | FLAG_REPLY, u64Payload(0)), fds: [] }, asIs(r)]),
    ],
    ['vhost-user.reply-ack.success', 'rng', onFirst(Req.SET_OWNER, (r) => [{ data: encode(r.request, r.flags, u64Payload(1)), fds: r.fds }])],
    ['vhost-user.queue-num', 'rng', onFirst(Req.GET_QUEUE_NUM, (r) => [{ data: encode(r.request, r.flags, u64Payload(0)), fds: r.fds }])],
    [
      'vhost-user.ring.stop-base',
      'rng',
      onFirst(Req.GET_VRING_BASE, (r) => {
        const p = r.payload.slice();
        new DataView(p.buffer).setUint32(4, new DataView(p.buffer).getUint32(4, true) + 1, true);
        return [{ data: encode(r.request, r.flags, p), fds: r.fds }];
      }),
    ],
    ['vhost-user.status.echo', 'rng', onFirst(Req.GET_STATUS, (r) => [{ data: encode(r.request, r.flags, u64Payload(u64(r) & ~BigInt(Status.FEATURES_OK))), fds: r.fds }])],
    [
      'vhost-user.config.echo',
      'blk',
      onFirst(Req.GET_CONFIG, (r) => {
        const p = r.payload.slice();
        new DataView(p.buffer).setUint32(0, 4, true); // an offset that was not asked
        return [{ data: encode(r.request, r.flags, p), fds: r.fds }];
      }),
    ],
    // A reply that never comes: the protocol session ends at its (short) bound.
    ['vhost-user.reply.each', 'rng', onFirst(Req.GET_QUEUE_NUM, () => []), { waitMs: 2000 }],
    [
      'vhost-user.reply-ack.failure',
      'rng',
      (r) => (r.request === Req.SET_VRING_ADDR && (r.flags & FLAG_REPLY) !== 0 && u64(r) !== 0n ? [{ data: encode(r.request, r.flags, u64Payload(0)), fds: r.fds }] : [asIs(r)]),
      { cases: ['ring.addr-outside-ack'] },
    ],
    // A feature set refused (non-zero REPLY_ACK), then FEATURES_OK shown all the same.
    [
      'basic.features.device.3',
      'rng',
      (r) => (r.request === Req.GET_STATUS && (r.flags & FLAG_REPLY) !== 0 ? [{ data: encode(r.request, r.flags, u64Payload(u64(r) | BigInt(Status.FEATURES_OK))), fds: r.fds }] : [asIs(r)]),
      { cases: ['features.features-ok-refusal'] },
    ],
  ];
  for (const [rule, type, mutate, options] of cases) {
    test(`${rule}: named when the back-end breaks it`, async () => {
      const r = await probeThrough(type, mutate, options);
      const ids = failed(r);
      assert.ok(ids.some((id) => id === rule || id.endsWith(`:${rule}`)), `${rule} among the failures: ${ids.join(', ')}`);
      assert.equal(r.summary.clean, false);
    });
  }
});

describe('virtio-ts probe tells a hung, wedged, crashed or scribbling back-end', () => {
  /** Probes serve rng through a proxy with `filter` on the front-end's messages, running the one hostile case `id`. */
  async function caseThrough(id: string, filter: (proxy: MutatingProxy) => RequestFilter): Promise<ProbeReport> {
    const path = join(dir, `proxy-${k++}.sock`);
    let proxy!: MutatingProxy;
    proxy = new MutatingProxy(path, join(dir, 'rng.sock'), (r) => [asIs(r)], (m) => filter(proxy)(m));
    try {
      // A short bound: the hung case waits it out once (a reply that never comes), nothing else waits.
      return await runProbe({ socketPath: path, type: 'rng', waitMs: 2000, cases: [id] });
    } finally {
      proxy.close();
    }
  }
  const unknownRequestThrough = (filter: (proxy: MutatingProxy) => RequestFilter) => caseThrough('message.unknown-request', filter);
  const UNKNOWN = 99;

  test('hung: the session stops answering after the case', async () => {
    let stalled = false;
    const r = await unknownRequestThrough(() => (m) => ((stalled ||= m.request === UNKNOWN) ? 'drop' : 'pass'));
    assert.equal(r.hostile?.[0].outcome, 'hung', r.hostile?.[0].note);
    assert.equal(r.hostile?.[0].ok, false);
  });

  test('wedged: the case is taken quietly, but no session is served after it', async () => {
    const r = await unknownRequestThrough((proxy) => (m) => {
      if (m.request !== UNKNOWN) return 'pass';
      proxy.refuseNew = true;
      return 'drop';
    });
    assert.equal(r.hostile?.[0].reaction, 'ignored');
    assert.equal(r.hostile?.[0].outcome, 'wedged', r.hostile?.[0].note);
    assert.equal(r.summary.clean, false);
  });

  test('crashed: the socket stops accepting', async () => {
    const r = await unknownRequestThrough((proxy) => (m) => {
      if (m.request === UNKNOWN) proxy.stopListening();
      return 'pass';
    });
    assert.equal(r.hostile?.[0].outcome, 'crashed', r.hostile?.[0].note);
    assert.match(r.hostile?.[0].note ?? '', /ECONNREFUSED/);
  });

  test('wrote-outside: guest memory outside the buffers given loses its canary', async () => {
    const n = native();
    // The planted fault: the memory table's memfd, mapped by the proxy and written where no buffer is.
    const r = await caseThrough('chain.loop', () => (m) => {
      if (m.request === Req.SET_MEM_TABLE && m.fds.length === 1) {
        const ram = n.mmap(m.fds[0], 0, 0x80000);
        new Uint8Array(ram)[0x70000] = 0;
        n.munmap(ram);
      }
      return 'pass';
    });
    assert.equal(r.hostile?.[0].outcome, 'wrote-outside', r.hostile?.[0].note);
    assert.match(r.hostile?.[0].note ?? '', /written at 0x70000/);
  });
});

describe('virtio-ts probe names the virtio clause a device breaks', () => {
  test('entropy.device-operation.device.1: a device that returns entropy buffers with no bytes; the CLI exits 1 and names it in --json', async () => {
    const path = join(dir, 'empty-rng.sock');
    // The planted fault: at most 0 bytes per request.
    const daemon = serveVhostUser(() => new RngDevice({ maxBytesPerRequest: 0, monitor: new Monitor({ mode: 'tolerant' }) }), { socket: path });
    try {
      const child = spawn(process.execPath, [bin, 'probe', '--socket-path', path, '--type', 'rng', '--json', '--wait-ms', '5000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const code = await new Promise<number | null>((res) => child.on('exit', res));
      assert.equal(code, 1, 'exit 1: violations found');
      const report = JSON.parse(out) as ProbeReport;
      const check = report.checks.find((c) => c.id === 'entropy.device-operation.device.1');
      assert.equal(check?.status, 'fail', JSON.stringify(check));
      assert.match(check?.session ?? '', /^driver /);
    } finally {
      await daemon.close();
    }
  });
});
