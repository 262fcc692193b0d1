// QEMU + Linux <-> `virtio-ts monitor` <-> a block back-end advertising seg_max 1022 with a queue
// of 128: Linux 6.1's virtio_blk honours seg_max alone and builds indirect tables longer than the
// queue (split/packed.indirect-descs.driver.3, a catalogued deviation). The proxy must name them.
//
// A passive observer judges a chain only while the chain is out (once used, its descriptors may
// be another's), and how long a chain stays out is the back-end's business: a fast back-end may
// complete it before the proxy looks. So the back-end here (a BlkDevice served in this process
// with serveVhostUser, the library's public API) holds every request whose chain its own monitor
// found long, and completes nothing else meanwhile, until the proxy's live `--json` output has
// named that chain (its head, or its first slot on a packed ring). Then the proxy's verdicts do
// not depend on when it looked; a bound per held chain is only a hang guard (a proxy that never
// names the chain fails the test with what was seen, it does not hang it).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { boot, guestTest } from '../../guest/harness.js';
import { BlkDevice, MemoryBlockStorage, Monitor, loadDeviations, serveVhostUser, type BlockStorage, type ProxyVerdict, type Verdict } from '../../../src/node.js';
import { fresh, monitorBetween } from '../guest-helpers.js';

const MiB = 1 << 20;
/** Hang guard per held chain (the guest's own bound is 120 s). */
const HOLD_GUARD_MS = 30_000;

/**
 * Pairs the back-end's long chains with the proxy's verdicts on them, by key (split: the chain's
 * head; packed: its first slot). While a chain waits to be named the back-end completes nothing:
 * on a packed ring a completion writes a used descriptor over the next slots, which could be the
 * held chain's before the proxy read it.
 */
class NamedGate {
  /** Long chains the back-end held, those the proxy named (paired with a hold), and of those the ones named before the back-end took them. */
  held = 0;
  paired = 0;
  early = 0;
  /** Holds ended by the hang guard instead (after one, nothing more is held). */
  readonly guarded: string[] = [];
  /** Proxy verdicts not paired yet, per key (the proxy may look before the back-end pops the chain). */
  private readonly unpaired = new Map<number, number>();
  private readonly waiting = new Map<number, () => void>();
  private idle: Promise<void> = Promise.resolve();
  private wake: () => void = () => undefined;

  constructor(
    private readonly clause: string,
    private readonly key: (context: Record<string, unknown> | undefined) => number,
  ) {}

  /** A verdict of the proxy (live): releases the hold on its chain, or waits for one. */
  named(v: ProxyVerdict): void {
    if (v.clause !== this.clause) return;
    const k = this.key(v.context);
    const release = this.waiting.get(k);
    if (release !== undefined) release();
    else this.unpaired.set(k, (this.unpaired.get(k) ?? 0) + 1);
  }

  /** The back-end met a long chain (its monitor's verdict): hold it until the proxy names it. */
  hold(k: number): void {
    if (this.guarded.length > 0) return;
    this.held++;
    const early = this.unpaired.get(k) ?? 0;
    if (early > 0) {
      this.unpaired.set(k, early - 1);
      this.paired++;
      this.early++;
      return;
    }
    if (this.waiting.size === 0) this.idle = new Promise((r) => (this.wake = r));
    const timer = setTimeout(() => {
      this.guarded.push(`chain ${k}: not named by the proxy within ${HOLD_GUARD_MS} ms`);
      for (const release of [...this.waiting.values()]) release();
    }, HOLD_GUARD_MS);
    this.waiting.set(k, () => {
      clearTimeout(timer);
      this.waiting.delete(k);
      if (this.guarded.length === 0) this.paired++;
      if (this.waiting.size === 0) this.wake();
    });
  }

  /** Resolves when no chain waits to be named. */
  async clear(): Promise<void> {
    while (this.waiting.size > 0) await this.idle;
  }
}

/**
 * A disk in memory whose every request first waits at the gate; a request that follows a long
 * chain's verdict (the device walks the chain, then calls the storage for it, in one go) starts
 * that chain's hold. No synchronous methods: every request goes through here.
 */
class GatedStorage implements BlockStorage {
  readonly readOnly = false;
  /** The key of the long chain the device just walked, taken by the next request. */
  pending: number | null = null;
  constructor(
    readonly inner: MemoryBlockStorage,
    private readonly gate: NamedGate,
  ) {}
  get size(): number {
    return this.inner.size;
  }
  private async pass(): Promise<void> {
    if (this.pending !== null) this.gate.hold(this.pending);
    this.pending = null;
    await this.gate.clear();
  }
  async read(offset: number, views: readonly Uint8Array[]): Promise<void> {
    await this.pass();
    await this.inner.read(offset, views);
  }
  async write(offset: number, views: readonly Uint8Array[]): Promise<void> {
    await this.pass();
    await this.inner.write(offset, views);
  }
  async flush(): Promise<void> {
    await this.pass();
    await this.inner.flush();
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.pass();
    await this.inner.writeZeroes(offset, length); // memory: zeroes whether or not unmap may deallocate
  }
}

for (const [ring, prop] of [['split', ''], ['packed', ',packed=on']] as const) {
  const clause = `${ring}.indirect-descs.driver.3`;
  guestTest(`QEMU + Linux <-> virtio-ts monitor <-> a BlkDevice with seg_max 1022 (${ring}), holding each long chain until the proxy names it: the proxy names every one, as ${clause}, the only verdict`, async () => {
    const key = (c: Record<string, unknown> | undefined) => Number(ring === 'split' ? c?.head : c?.slot);
    const gate = new NamedGate(clause, key);
    const storage = new GatedStorage(new MemoryBlockStorage(16 * MiB), gate);
    const backendVerdicts: Verdict[] = [];
    // As `virtio-ts serve blk` makes its monitor: tolerant, Linux's known deviations marked, and
    // the ring format not the guest's choice over vhost-user (QEMU's packed=on picks it).
    const monitor = new Monitor({
      mode: 'tolerant',
      deviations: loadDeviations(),
      ignore: ['reserved.bits.driver.6'],
      onVerdict: (v) => {
        backendVerdicts.push(v);
        if (v.clause === clause) storage.pending = key(v.context);
      },
    });
    const m = fresh();
    m.onVerdict = (v) => gate.named(v);
    const run = await boot({
      kind: 'blk',
      test: 'bigdd',
      device: `vhost-user-blk-pci,chardev=c0,queue-size=128${prop}`,
      serveArgs: [],
      memoryMiB: 512,
      timeoutMs: 120_000,
      // size_max 4096: one page per segment, so Linux's tables outgrow the queue whatever the
      // guest's page layout (with 1 MiB segments adjacent pages merge and the tables may fit).
      server: (socket) => serveVhostUser(new BlkDevice({ storage, segMax: 1022, sizeMax: 4096, queueMaxSize: 1024, monitor }), { socket }),
      // The proxy's own pacing (no --poll-max-ms): the holds make its looks sufficient.
      interpose: monitorBetween(m),
    });
    const proxyNamed = m.verdicts.filter((v) => v.clause === clause).length;
    const backendNamed = backendVerdicts.filter((v) => v.clause === clause).length;
    process.stdout.write(`# ${ring}: the back-end held ${gate.held} long chain(s) (${gate.early} named by the proxy before the back-end took them); the proxy named ${proxyNamed}, the back-end's monitor ${backendNamed}\n`);
    assert.equal(run.results.get('readback-md5'), run.results.get('pattern-md5'), 'the guest read back what it wrote');
    assert.equal(createHash('md5').update(storage.inner.bytes.subarray(0, 8 * MiB)).digest('hex'), run.results.get('pattern-md5'), 'the disk holds it');
    // The back-end: Linux built long tables, and that is all it did wrong.
    assert.ok(backendNamed > 0, `the back-end's monitor named ${clause}: Linux's tables outgrew the queue`);
    const other = backendVerdicts.filter((v) => v.clause !== clause);
    assert.deepEqual(other, [], `the back-end saw nothing else:\n${other.map((v) => `${v.clause}: ${v.message}`).join('\n')}`);
    // Every long chain was held until the proxy named it: none waited out the hang guard.
    assert.deepEqual(gate.guarded, [], `the proxy named every held chain (it named ${proxyNamed}; stderr:\n${m.stderr.slice(-2000)})`);
    assert.equal(gate.held, backendNamed, 'every long chain the back-end met was held');
    assert.equal(gate.paired, gate.held, 'each held chain was paired with a proxy verdict on it');
    // The proxy: names the deviation (every long chain, once), and nothing else.
    assert.ok(proxyNamed >= 1, `the proxy named ${clause}`);
    assert.equal(proxyNamed, backendNamed, 'the proxy named each long chain once, as the back-end did');
    for (const v of m.verdicts) {
      assert.equal(v.clause, clause, v.message);
      assert.equal(v.side, 'driver');
      assert.equal(v.severity, 'violation');
      assert.match(v.deviation?.driver ?? '', /Linux/, 'marked as the known deviation');
      assert.equal(v.queue, 0);
    }
    const watched = (m.report?.sessions ?? []).flatMap((x) => x.rings).filter((r) => r.index === 0);
    assert.ok(watched.some((r) => r.available > 0), `the proxy watched ring 0: ${JSON.stringify(watched)}`);
    assert.equal(m.report?.summary.clean, true, 'known deviations only: clean');
    assert.equal(m.exitCode, 0, m.stderr);
  });
}
